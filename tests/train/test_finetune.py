"""`train_blocks` / `lora_rank` end to end on tiny data: the cache holds the frozen part and gives the live loss,
the checkpoint carries the trained blocks into evaluate's predictions, `--resume` is exact, bad values are one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_overrides, write_prepared
from safetensors.torch import load_file
from test_train_cli import _crash_at, _one_line, metrics, run_cli

from common.images import read_image
from common.runtime import Runtime
from evaluate.inference import predict_images
from models.backbones import build_backbone
from models.checkpoint import load_checkpoint
from models.heads import build_head
from models.segmenter import Segmenter
from train import feature_cache
from train.data import bank_for, file_hashes, load_samples, read_mask
from train.loop import TrainStep
from train.views import apply_view

pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")
K, CROP = 2, 112  # a multiple of both patch sizes (training crops always are)


@pytest.mark.parametrize("name, train_blocks", [("tiny_dinov2", 1), ("tiny_dinov2_reg", 2), ("tiny_dinov3", 2)])
def test_cached_frozen_part_gives_the_loss_and_gradients_of_the_live_backbone(tmp_path, name, train_blocks):
    """The cache holds the maps of tapped frozen blocks and the tokens entering the first trained block; the first
    step's loss from it is the live one's bit for bit on the same fp16-stored features (and within fp16 of fp32)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone(name, layers=4).set_trainable(train_blocks)
    segmenter = Segmenter(
        backbone, build_head("segformer", backbone.embed_dim, 4, 3, channels=16, loss_points=0)
    ).train()
    folder = write_prepared(tmp_path / "data", train=2, val=1)
    train = load_samples(folder)[1]["train"]
    banks = [bank_for(s, K, CROP, (0.8, 1.0), seed=0) for s in train]
    root = feature_cache.backbone_dir(tmp_path / "cache", backbone, "fp32")
    names = backbone.frozen_names()
    assert names == [f"layer_{i}" for i in range(4 - train_blocks)] + [f"tokens_{4 - train_blocks}"]
    entries = [
        feature_cache.cache_entry(root, tmp_path / "cache" / "labels", ih, mh, bank, names)
        for (ih, mh), bank in zip(file_hashes(train), banks)
    ]
    extract = feature_cache.make_extractor(segmenter.frozen_features, Runtime(torch.device("cpu")))
    jobs = [(s.image_path, s.mask_path, bank) for s, bank in zip(train, banks)]
    assert feature_cache.fill_cache(jobs, entries, extract, batch_size=3, progress=False) == 2
    assert sorted(p.name for p in entries[0].layer_paths) == sorted(f"{n}.npy" for n in names)
    data = feature_cache.CachedViews(entries, K)
    items = [data[(0, i)] for i in range(len(data))]
    cached = [torch.stack([maps[j] for maps, _ in items]).float() for j in range(len(names))]
    target = torch.stack([label for _, label in items])
    pairs = [
        apply_view(read_image(s.image_path), read_mask(s.mask_path), view)
        for s, bank in zip(train, banks)
        for view in bank
    ]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)
    assert torch.equal(target, torch.from_numpy(np.stack([p[1] for p in pairs])).long())

    step = TrainStep(segmenter)
    trained = [p for p in backbone.parameters() if p.requires_grad]

    def loss_and_grads(inputs):
        segmenter.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout every time
        loss = step(inputs, target)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trained]

    from_cache = loss_and_grads(cached)
    rounded = [
        t.half().float().contiguous() for t in segmenter.frozen_features(images)
    ]  # the live frozen part, stored as fp16
    live_on_stored = loss_and_grads(rounded)
    live = loss_and_grads(images)  # the whole backbone live, fp32 throughout
    assert torch.equal(from_cache[0], live_on_stored[0])
    for a, b in zip(from_cache[1], live_on_stored[1]):  # summed in another order (memory layouts differ)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(from_cache[0], live[0], rtol=2e-3, atol=1e-4)
    assert all(g.abs().sum() > 0 for g in live[1])  # the trained blocks get gradients


def _logits(model, image):
    with torch.no_grad():
        return model(torch.from_numpy(image).permute(2, 0, 1)[None]).float()


def test_train_blocks_1_checkpoint_predicts_with_its_trained_block(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=12, eval_every=6, train_blocks=1, backbone_lr_mult=1.0)
    status, err = run_cli(monkeypatch, capsys, "train/configs/segformer.yaml", name="tuned", **settings)
    assert status == 0, err
    run = tmp_path / "runs" / "tuned"
    log = (run / "train.log").read_text()
    assert "fine-tuning blocks 3-3 of tiny_dinov2" in log and "at lr x 1.0" in log
    cached = {p.name for p in (tmp_path / "cache").rglob("*.npy") if "labels" not in p.parts}
    assert cached == {"layer_0.npy", "layer_1.npy", "layer_2.npy", "tokens_3.npy"}  # block 3's input, not its map
    tensors = load_file(run / "checkpoint_last.safetensors")
    assert {k.split(".")[2] for k in tensors if k.startswith("backbone.")} == {"3"}
    spec = json.loads((run / "checkpoint_last.json").read_text())
    assert spec["train_blocks"] == 1 and spec["version"] == 3

    model, _ = load_checkpoint(run, "last")
    state = torch.load(run / "train_state.pt", weights_only=True)  # the weights as they were in training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone("tiny_dinov2", layers=4).set_trainable(1)
        frozen = build_backbone("tiny_dinov2", layers=4)
    backbone.load_trainable_state(state["backbone"])
    head = build_head("segformer", 32, 4, 3, **json.loads(json.dumps(spec["head_config"])))
    head.load_state_dict(state["head"])
    as_trained, on_frozen = Segmenter(backbone, head).eval(), Segmenter(frozen, head).eval()
    image = read_image(load_samples(prepared)[1]["val"][0].image_path)
    assert torch.equal(_logits(model, image), _logits(as_trained, image))  # the save/load round trip is exact
    assert not torch.equal(_logits(model, image), _logits(on_frozen, image))  # (DINOv2's layer scale starts at 1e-5)
    moved = tensors["backbone.blocks.3.attn.qkv.weight"] - frozen.vit.blocks[3].attn.qkv.weight
    assert moved.abs().max() > 1e-3 and torch.equal(
        model.backbone.vit.blocks[3].attn.qkv.weight, backbone.vit.blocks[3].attn.qkv.weight
    )
    predicted = next(predict_images(model, iter([image]), 3, 56, 56, device="cpu", precision="fp32"))
    expected = next(predict_images(as_trained, iter([image]), 3, 56, 56, device="cpu", precision="fp32"))
    np.testing.assert_array_equal(predicted.mask, expected.mask)  # evaluate's path predicts with the trained block
    assert metrics(run)[-1]["miou"] > 0.6


@pytest.mark.parametrize("more", [{"train_blocks": 1}, {"train_blocks": 2, "lora_rank": 2}])
def test_resume_with_trained_blocks_ends_as_an_uninterrupted_run(tmp_path, prepared, monkeypatch, capsys, more):
    settings = tiny_overrides(tmp_path, prepared, steps=8, eval_every=4, **more)
    assert run_cli(monkeypatch, capsys, None, name="whole", **settings)[0] == 0
    with monkeypatch.context() as patch:
        _crash_at(patch, 7, RuntimeError("simulated crash"))
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_cli(monkeypatch, capsys, None, name="broken", **settings)
    status, err = run_cli(monkeypatch, capsys, None, name="broken", resume=True, **settings)
    assert status == 0, err
    whole, resumed = (load_file(tmp_path / "runs" / n / "checkpoint_last.safetensors") for n in ("whole", "broken"))
    assert whole.keys() == resumed.keys() and any(k.startswith("backbone.blocks.") for k in whole)
    assert not any("lora" in k for k in whole)  # LoRA is merged into the blocks' weights
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    state = torch.load(tmp_path / "runs" / "broken" / "train_state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]  # head; trained matrices (decayed); biases, norms, scales (not)
    assert [g["weight_decay"] for g in groups] == ([1e-4, 1e-4] if "lora_rank" in more else [1e-4, 1e-4, 0.0])
    assert [g["initial_lr"] for g in groups][1:] == [3e-3 * 0.1] * (len(groups) - 1)
    assert any("lora_A" in k for k in state["backbone"]) == ("lora_rank" in more)
    status, err = run_cli(
        monkeypatch, capsys, None, name="broken", resume=True, **(settings | {"train_blocks": 0, "lora_rank": 0})
    )
    _one_line(status, err, "was trained with train_blocks", "resume with those")


def test_train_blocks_all_trains_live_without_a_cache(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=4, eval_every=4, train_blocks="all")
    status, err = run_cli(monkeypatch, capsys, None, name="all", **settings)
    assert status == 0, err
    run = tmp_path / "runs" / "all"
    assert "no feature cache" in (run / "train.log").read_text() and not (tmp_path / "cache").exists()
    tensors = load_file(run / "checkpoint_last.safetensors")
    assert {"backbone.patch_embed.proj.weight", "backbone.norm.weight", "backbone.pos_embed"} <= set(tensors)
    model, spec = load_checkpoint(run, "last")
    assert spec.train_blocks == "all"
    assert torch.equal(model.backbone.vit.patch_embed.proj.weight, tensors["backbone.patch_embed.proj.weight"])


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("train_blocks", "5", "train_blocks 5 is more than the 4 blocks of tiny_dinov2"),
        ("train_blocks", "some", "train_blocks is a number of last backbone blocks to train, or 'all'"),
        ("train_blocks", "-1", "train_blocks must be a block count from 0 or 'all'"),
        ("backbone_lr_mult", "0", "backbone_lr_mult must be more than 0"),
        ("lora_rank", "-2", "lora_rank must be 0 (off) or a positive rank"),
        ("lora_rank", "4", "lora_rank 4 puts LoRA adapters on the trained blocks; set train_blocks too"),
    ],
)
def test_fine_tuning_values_are_refused_at_config_load(tmp_path, prepared, monkeypatch, capsys, key, value, fragment):
    _one_line(*run_cli(monkeypatch, capsys, None, **(tiny_overrides(tmp_path, prepared) | {key: value})), fragment)
    assert not (tmp_path / "runs").exists()


def test_fine_tuned_and_lora_runs_share_the_frozen_runs_cache_folder(tmp_path):
    """The folder is keyed by the backbone's weights; LoRA wrapping them (peft renames `qkv.weight` to
    `qkv.base_layer.weight`) changes none of them, so the frozen part's files are shared."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = build_backbone("tiny_dinov2", layers=4)
        tuned = build_backbone("tiny_dinov2", layers=4).set_trainable(2)
        adapted = build_backbone("tiny_dinov2", layers=4).set_trainable(2, lora_rank=2)
    folders = {feature_cache.backbone_dir(tmp_path, b, "fp32") for b in (plain, tuned, adapted)}
    assert len(folders) == 1
