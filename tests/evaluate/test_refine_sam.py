"""SAM refinement: the prompts, the majority-class and overlap rules on a fake SAM whose masks are known, both weight
formats (written here with random weights) loaded and refining to a valid class mask, bad weights refused first,
and predict's journal and torchrun shards with --refine sam."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import UserError
from common.runtime import resolve_runtime
from common.settings import REPO_ROOT
from evaluate.refine_sam import (
    Embedded,
    RefineSettings,
    check_refine_flags,
    colony_prompt,
    colony_regions,
    combine,
    majority_class,
    mask_in_window,
    refine_mask,
)
from evaluate.sam_models import check_sam_weights, load_sam, sam_architecture

FP32 = resolve_runtime("cpu", "fp32")


class FakeSam:
    """A SAM whose answer is known: of the `instances` (bool masks) holding a prompt's first point, the smallest."""

    input_size = 512

    def __init__(self, instances: list[np.ndarray]) -> None:
        self.instances = instances
        self.prompts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def embed(self, image: np.ndarray) -> Embedded:
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        return Embedded(None, (height, width), (round(height * scale), round(width * scale)))

    def decode(self, embedded, boxes, points, labels):
        height, width = embedded.image_size
        side = self.input_size // 4  # SAM's low-resolution logits: a quarter of the input side
        ys = ((np.arange(side) + 0.5) * 4 * height / embedded.resized[0]).astype(int)
        xs = ((np.arange(side) + 0.5) * 4 * width / embedded.resized[1]).astype(int)
        inside = (ys[:, None] < height) & (xs[None] < width)
        rows, columns = np.minimum(ys, height - 1)[:, None], np.minimum(xs, width - 1)[None]
        logits = []
        for box, point, label in zip(boxes.numpy(), points.numpy(), labels.numpy()):
            self.prompts.append((box, point, label))
            x, y = int(point[0][0] * width / embedded.resized[1]), int(point[0][1] * height / embedded.resized[0])
            holding = [m for m in self.instances if m[y, x]]
            chosen = min(holding, key=lambda m: m.sum()) if holding else np.zeros((height, width), bool)
            logits.append(torch.tensor(np.where(chosen[rows, columns] & inside, 8.0, -8.0), dtype=torch.float32))
        return torch.stack(logits), torch.ones(len(logits))


def disc(shape, centre, radius):
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def test_prompts_box_points_inside_and_negatives_on_other_classes():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 10:50] = 1
    mask[20:30, 40:50] = 2  # another genus inside the box
    (colony, other) = colony_regions(mask, min_area=16)
    assert (colony.class_index, colony.box) == (1, (10, 10, 50, 40))
    prompt = colony_prompt(mask, colony, RefineSettings(positive_points=3, negative_points=2))
    assert prompt.box == (10, 10, 49, 39)  # inclusive, as SAM's training boxes
    assert list(prompt.labels) == [1, 1, 1, 0, 0]
    positives, negatives = prompt.points[:3].astype(int), prompt.points[3:].astype(int)
    assert all(mask[y, x] == 1 for x, y in positives) and all(mask[y, x] == 2 for x, y in negatives)
    assert len({tuple(p) for p in positives}) == 3  # spread out, never the same pixel twice
    assert all(5 <= min(x - 10, 49 - x, y - 10, 39 - y) for x, y in positives)  # deep inside, not on the outline
    assert prompt.window == (0, 0, 66, 56)  # grown by 16 px (a quarter of a side under 64 px), clipped
    assert len(colony_prompt(mask, other, RefineSettings(negative_points=2)).labels) == 3  # no other genus there
    assert [(r.class_index, int(r.pixels.sum())) for r in colony_regions(mask, min_area=101)] == [(1, 1100)]


def test_majority_class_decides_and_background_drops():
    semantic = np.array([[1, 1, 2, 2, 2], [0, 0, 0, 0, 0]], np.uint8)
    assert majority_class(semantic, semantic > 0, 3) == 2
    assert majority_class(semantic, np.ones_like(semantic, bool), 3) == 0  # mostly background
    assert majority_class(semantic, np.zeros_like(semantic, bool), 3) == 0  # empty
    assert majority_class(np.array([[1, 2]], np.uint8), np.ones((1, 2), bool), 3) == 1  # ties: the lower index


def box(shape, rows, columns):
    out = np.zeros(shape, bool)
    out[rows, columns] = True
    return out


def test_refinement_rules_on_known_masks():
    shape = (128, 128)
    semantic = np.zeros(shape, np.uint8)
    semantic[14:46, 14:46] = 1  # A: a square colony; SAM's disc is its true outline
    semantic[85:95, 25:35] = 2  # B: a small colony SAM grows over mostly background: dropped, B kept as predicted
    semantic[12:48, 72:96] = 1  # C (class 1) and D (class 2), whose SAM masks overlap: D is smaller and wins
    semantic[32:44, 104:124] = 2
    semantic[70:110, 80:120] = 2  # E: a class-1 colony whose SAM mask lies mostly on class 2 pixels
    semantic[70:110, 66:80] = 1
    semantic[80:100, 60:66] = 1
    semantic[120:124, 120:124] = 1  # 16 px: below min_area, never prompted
    a = disc(shape, (30, 30), 20)
    instances = [
        a,
        box(shape, slice(60, 120), slice(0, 60)),
        box(shape, slice(10, 50), slice(70, 120)),
        box(shape, slice(30, 45), slice(100, 125)),
        box(shape, slice(70, 110), slice(66, 120)),
    ]
    sam = FakeSam(instances)
    result = refine_mask(sam, np.zeros((*shape, 3), np.uint8), semantic, 3, RefineSettings(2, 0, min_area=20))
    out = result.mask
    assert out.dtype == np.uint8 and out.shape == shape and set(np.unique(out)) <= {0, 1, 2}
    assert (out[a] == 1).all() and (out[:60, :60][~a[:60, :60]] == 0).all()  # A became SAM's disc, class 1
    assert (out[85:95, 25:35] == 2).all() and (out[60:120, 0:60] == 2).sum() == 100  # B dropped, kept as predicted
    assert (out[30:45, 100:125] == 2).all()  # D (smaller) on top of C
    assert (out[10:30, 70:100] == 1).all() and (out[30:50, 70:100] == 1).all()  # C's own mask elsewhere, class 1
    assert (out[10:30, 112:120] == 0).all() and (
        out[45:50, 112:120] == 0
    ).all()  # C's mask is read only inside its window (box + 16 px)
    assert (out[70:110, 66:120] == 2).all()  # E: the majority under SAM's mask decides, not the prompting colony
    assert (out[80:100, 60:66] == 0).all()  # a refined colony's pixels outside every kept mask: background
    assert (out[120:124, 120:124] == 1).all()  # the tiny colony untouched
    assert result.prompted == len(sam.prompts) == 6 and (result.kept, result.dropped) == (5, 1)


def test_combine_clears_a_refined_colony_and_leaves_unclaimed_pixels():
    semantic = np.zeros((20, 20), np.uint8)
    semantic[2:10, 2:10] = 1
    semantic[12:18, 12:18] = 2
    (first, second) = colony_regions(semantic, 1)
    shrunk = np.zeros((20, 20), bool)
    shrunk[4:8, 4:8] = True  # SAM says the colony is smaller
    result = combine(semantic, [first], [shrunk], [(0, 0, 20, 20)], 3)
    assert (result.mask == 1).sum() == 16 and (result.mask == 2).sum() == 36  # the unprompted colony unchanged
    assert (result.kept, result.dropped) == (1, 0)


def tiny_segment_anything(path: Path, seed: int = 0) -> Path:
    """A segment_anything checkpoint with random weights: a 2-block, 32-wide image encoder (windowed attention)."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    torch.save(_build_sam(32, 2, 2, []).state_dict(), path)
    return path


def tiny_huggingface(folder: Path, seed: int = 0) -> Path:
    """A Hugging Face SAM folder with random weights, 256 px input and every width 32."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(image_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           global_attn_indexes=[1], output_channels=32, mlp_dim=64, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=256, image_embedding_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, iou_head_hidden_dim=32),
    )  # fmt: skip
    SamModel(config).save_pretrained(folder)
    return folder


def test_variants_are_read_from_the_shapes():
    from segment_anything import sam_model_registry

    for variant in ("vit_b", "vit_l", "vit_h"):
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in sam_model_registry[variant]().state_dict().items()}
        assert sam_architecture(Path("x.pth"), shapes).variant == variant


def test_segment_anything_checkpoint_decodes_as_segment_anything_predicts(tmp_path):
    from segment_anything import SamPredictor

    weights = check_sam_weights(tiny_segment_anything(tmp_path / "sam_tiny.pth"))
    assert (weights.format, weights.variant) == ("segment_anything", "vit (embed 32, depth 2)")
    sam = load_sam(weights, FP32)
    image = (np.random.default_rng(1).random((96, 64, 3)) * 255).astype(np.uint8)
    embedded = sam.embed(image)
    predictor = SamPredictor(sam.sam)
    predictor.set_image(image)
    predictor.features = embedded.embedding  # the same embedding: the resize differs slightly (PIL vs torch)
    box, points, labels = np.array([8.0, 10, 40, 70]), np.array([[20.0, 30], [35, 60]]), np.array([1, 0])
    masks, _, low_res = predictor.predict(points, labels, box, multimask_output=False, return_logits=True)
    scale = np.array([embedded.resized[1] / 64, embedded.resized[0] / 96], np.float32)
    logits, _ = sam.decode(
        embedded,
        torch.tensor(box.reshape(2, 2) * scale, dtype=torch.float32).reshape(1, 4),
        torch.tensor(points * scale, dtype=torch.float32)[None],
        torch.tensor(labels)[None],
    )
    assert torch.allclose(logits[0], torch.tensor(low_res[0]), atol=1e-4)
    ours = mask_in_window(logits[0], (0, 0, 64, 96), embedded, sam.input_size)
    assert (ours == (masks[0] > 0)).mean() > 0.98  # one bilinear step against SAM's two


@pytest.mark.parametrize("fmt", ["segment_anything", "huggingface"])
def test_both_formats_refine_to_a_valid_class_mask(tmp_path, fmt):
    path = tiny_segment_anything(tmp_path / "s.pth") if fmt == "segment_anything" else tiny_huggingface(tmp_path / "hf")
    weights = check_sam_weights(path)
    assert weights.format == fmt and len(weights.sha256) >= 64
    sam = load_sam(weights, FP32)
    semantic = np.zeros((90, 120), np.uint8)
    semantic[10:50, 10:60] = 1
    semantic[55:85, 60:110] = 2
    semantic[5:9, 100:104] = 2  # 16 px: not prompted
    image = (np.random.default_rng(2).random((90, 120, 3)) * 255).astype(np.uint8)
    result = refine_mask(sam, image, semantic, 3, RefineSettings(min_area=64))
    assert result.mask.dtype == np.uint8 and result.mask.shape == semantic.shape
    assert set(np.unique(result.mask)) <= {0, 1, 2}
    assert result.prompted == 2 and result.kept + result.dropped == 2
    outside = np.ones(semantic.shape, bool)
    outside[39:101, 44:120] = outside[0:66, 0:76] = False  # the two prompted colonies' windows (box + 16 px)
    assert np.array_equal(result.mask[outside], semantic[outside])  # the 16-px colony among them
    again = refine_mask(sam, image, semantic, 3, RefineSettings(min_area=64))
    assert np.array_equal(again.mask, result.mask)  # deterministic


def _dinov2_like(path: Path) -> Path:
    torch.save(
        {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8), "blocks.0.norm1.weight": torch.ones(8)},
        path,
    )
    return path


def test_wrong_sam_weights_are_refused_with_one_sentence(tmp_path):
    good = tiny_segment_anything(tmp_path / "good.pth")
    random_file = tmp_path / "random.pth"
    random_file.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wrong_shapes = tmp_path / "wrong.pth"
    state = torch.load(good, weights_only=True)
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, wrong_shapes)
    no_config = tmp_path / "folder"
    no_config.mkdir()
    dino_folder = tmp_path / "dino_hf"
    dino_folder.mkdir()
    (dino_folder / "config.json").write_text('{"model_type": "dinov2"}')
    hf = tiny_huggingface(tmp_path / "hf")
    hf_truncated = tmp_path / "hf_truncated"
    hf_truncated.mkdir()
    (hf_truncated / "config.json").write_bytes((hf / "config.json").read_bytes())
    data = (hf / "model.safetensors").read_bytes()
    (hf_truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases = {
        _dinov2_like(tmp_path / "dinov2_vits14_pretrain.pth"): "DINOv2",
        random_file: "cannot be read",
        truncated: "cannot be read",
        wrong_shapes: "missing mask_decoder.iou_token.weight",
        no_config: "without config.json",
        dino_folder: "dinov2 model, not SAM",
        hf_truncated: "cannot be read",
        tmp_path / "absent.pth": "does not exist",
    }
    for path, why in cases.items():
        with pytest.raises(UserError) as raised:
            check_sam_weights(path)
        message = str(raised.value)
        assert path.name in message and why in message and "expected a segment_anything" in message, message
        assert "\n" not in message


def test_refine_flags_must_agree():
    assert check_refine_flags("sam", "w.pth") and not check_refine_flags("none", None)
    for refine, weights, why in (
        ("sam", None, "--refine sam needs --sam-weights"),
        ("none", "w.pth", "only with --refine sam"),
        ("instance", None, "--refine must be one of none, sam"),
    ):
        with pytest.raises(UserError, match=why):
            check_refine_flags(refine, weights)


def test_predict_refuses_wrong_sam_weights_before_any_work(tmp_path):
    bad = _dinov2_like(tmp_path / "dinov2.pth")
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate" / "predict.py"), str(tmp_path / "runs" / "no_such_run"),
         "--dataset", "no_such_dataset", "--refine", "sam", "--sam-weights", str(bad)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "dinov2.pth" in done.stderr and "DINOv2" in done.stderr and "Traceback" not in done.stderr
    assert "no_such" not in done.stderr and len(done.stderr.strip().splitlines()) == 1  # before the run or dataset


# --- predict.py with --refine sam: journal and torchrun -------------------------------------------------------


@pytest.fixture
def refine_survey(tmp_path, monkeypatch):
    import fiftyone as fo
    from evaluate_world import _image, make_run, world_environment
    from PIL import Image

    world_environment(tmp_path, monkeypatch, workers=0)
    dataset = fo.Dataset(f"test_refine_{uuid.uuid4().hex[:8]}")
    for i, (height, width) in enumerate([(70, 84), (84, 70), (70, 70)]):
        path = tmp_path / "photos" / f"Reef_2024_{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_image(height, width, seed=20 + i)).save(path)
        dataset.add_sample(fo.Sample(filepath=str(path), site="Reef", year=2024))
    run_dir = tmp_path / "runs" / "tiny-linear"
    make_run(run_dir)
    yield dataset, run_dir, tiny_huggingface(tmp_path / "sam_hf")
    dataset.delete()


def _predict(run_dir, dataset, **options):
    from evaluate.survey import PredictOptions, predict_survey
    from models.backbones import RandomBackboneWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        import io

        return predict_survey(
            __import__("common.settings", fromlist=["load_settings"]).load_settings(),
            PredictOptions(run_dir=run_dir, dataset=dataset, precision="fp32", workers=0, **options),
            io.StringIO(),
        )


def _journal_stats(out_dir: Path) -> list[dict]:
    import json

    return [json.loads(line)["stats"] for line in (out_dir / "predictions.rank0.jsonl").read_text().splitlines()]


def test_predict_with_refinement_journals_and_reuses(refine_survey):
    from prepare.mask_png import read_mask

    dataset, run_dir, sam_folder = refine_survey
    weights = check_sam_weights(sam_folder)
    plain = _predict(run_dir, dataset.name)
    out_dir = Path(plain["out_dir"])
    semantic = {p.name: read_mask(p) for p in (out_dir / "masks").iterdir()}
    refined = _predict(run_dir, dataset.name, sam_weights=weights, sam=RefineSettings(min_area=16))
    assert (refined["predicted_now"], refined["reused"]) == (3, 0)  # refining counts as a change of settings
    assert "SAM refinement" in refined["parts"]
    stats = _journal_stats(out_dir)
    assert sum(s["sam_prompted"] for s in stats) > 0 and all(s["sam_kept"] <= s["sam_prompted"] for s in stats)
    masks = {p.name: read_mask(p) for p in (out_dir / "masks").iterdir()}
    assert all(set(np.unique(m)) <= {0, 1, 2} and m.shape == semantic[name].shape for name, m in masks.items())
    dataset.reload()
    assert all(Path(s["pred_tiny_linear"].mask_path).name in masks for s in dataset)
    again = _predict(run_dir, dataset.name, sam_weights=weights, sam=RefineSettings(min_area=16))
    assert (again["predicted_now"], again["reused"]) == (0, 3)  # unchanged: never refined twice
    other = _predict(run_dir, dataset.name, sam_weights=weights, sam=RefineSettings(min_area=16, positive_points=1))
    assert other["predicted_now"] == 3  # other --sam-points: predicted again
    journal = out_dir / "predictions.rank0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while appending the second
    resumed = _predict(run_dir, dataset.name, sam_weights=weights, sam=RefineSettings(min_area=16, positive_points=1))
    assert (resumed["predicted_now"], resumed["reused"]) == (2, 1)


@pytest.mark.slow
def test_two_torchrun_processes_refine_as_one(refine_survey):
    dataset, run_dir, sam_folder = refine_survey
    twin = dataset.clone(f"{dataset.name}_twin")
    try:
        single = _predict(run_dir, dataset.name, sam_weights=check_sam_weights(sam_folder))
        env = {**os.environ, "WORKERS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             str(REPO_ROOT / "evaluate" / "predict.py"), str(run_dir), "--dataset", twin.name, "--precision", "fp32",
             "--refine", "sam", "--sam-weights", str(sam_folder)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        shard_dir = run_dir / "predict" / twin.name
        assert (shard_dir / "predictions.rank1.jsonl").is_file()
        for name in ("cover.csv", "colonies.csv"):
            assert (Path(single["out_dir"]) / name).read_text() == (shard_dir / name).read_text(), name
        twin.reload()
        dataset.reload()
        for a, b in zip(dataset.sort_by("filepath"), twin.sort_by("filepath")):
            assert (
                Path(a["pred_tiny_linear"].mask_path).read_bytes() == Path(b["pred_tiny_linear"].mask_path).read_bytes()
            )
    finally:
        twin.delete()
