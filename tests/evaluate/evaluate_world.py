"""A tiny evaluated world for the evaluate tests: random tiny ViT run, FiftyOne dataset, prepared folder.

The ground truth is made from the model's own predictions (traced to polygons, then rasterized by
`prepare` like any annotation), with one colony deleted, so every score has a known answer.
"""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.settings import Settings, load_settings
from models.backbones import RandomBackboneWarning

CLASSES = ["background", "Acropora", "Porites"]
PALETTE = [[0, 0, 0], [60, 180, 75], [128, 0, 0]]
TAXONOMY = """name: tinytax
classes:
  - {name: Acropora, color: [60, 180, 75], aliases: [acro]}
  - {name: Porites, color: [128, 0, 0]}
"""
COARSER_TAXONOMY = """name: tinycoral
parent: tinytax
classes:
  - {name: coral, color: [255, 127, 80], from: [Acropora, Porites]}
"""
WINDOW, WINDOW_STRIDE = 42, 28
SIZES = [(56, 70), (63, 84), (70, 56)]  # (height, width): images need not share a size


@dataclass
class World:
    root: Path
    settings: Settings
    dataset: str
    run_dir: Path
    model_masks: list[np.ndarray]  # fp32 predictions of the run on each image
    dropped: tuple[int, int]  # (image index, class index) of the ground-truth colony deleted
    sample_ids: list[str]


def make_run(run_dir: Path, classes=CLASSES, palette=PALETTE, taxonomy: str = "tinytax", seed: int = 5) -> None:
    """A checkpoint of tiny_dinov2 + a linear head with large random weights (so several classes win)."""
    from models.backbones import build_backbone
    from models.checkpoint import CheckpointSpec, save_run_checkpoint
    from models.heads import build_head

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        backbone = build_backbone("tiny_dinov2")
    generator = torch.Generator().manual_seed(seed)
    head = build_head("linear", backbone.embed_dim, 1, len(classes))
    with torch.no_grad():
        for tensor in head.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (3.0 if tensor.ndim > 1 else 0.1))
    spec = CheckpointSpec.of(backbone, head, classes, palette, taxonomy, window=WINDOW, window_stride=WINDOW_STRIDE)
    save_run_checkpoint(run_dir, head, spec)


def predict_fp32(run_dir: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    from evaluate.inference import predict_images
    from models.checkpoint import load_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        model, spec = load_checkpoint(run_dir)
    return [
        p.mask
        for p in predict_images(
            model, iter(images), len(spec.classes), spec.window, spec.window_stride, device="cpu", precision="fp32"
        )
    ]


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """Blocks of colour, so the tiny ViT's features (and the head's classes) vary across the image."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 7 + 1, width // 7 + 1, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((7, 7, 1), dtype=np.uint8))[:height, :width]


def _polylines(mask: np.ndarray, drop_class: int | None):
    """Ground-truth polylines tracing a mask exactly; the largest colony of `drop_class` left out."""
    import fiftyone as fo

    from prepare.polygons import mask_to_polygons, polygon_to_fiftyone_points

    height, width = mask.shape
    polygons = mask_to_polygons(mask, tolerance=0, min_area=16)
    if drop_class is not None:
        largest = max((p for p in polygons if p[0] == drop_class), key=lambda p: p[1].area)
        polygons = [p for p in polygons if p is not largest]
    raw = {1: "acro", 2: "Porites"}  # an alias, so relabelling to the taxonomy is exercised
    return fo.Polylines(
        polylines=[
            fo.Polyline(
                label=raw[c], points=polygon_to_fiftyone_points(p, width, height), closed=True, filled=True, z_order=0
            )
            for c, p in polygons
        ]
    )


def world_environment(root: Path, patch: pytest.MonkeyPatch, workers: int = 1) -> None:
    """Point the settings at `root`'s own data, taxonomies (tinytax, written if missing) and runs, on the CPU."""
    (root / "taxonomies").mkdir(exist_ok=True)
    if not (root / "taxonomies" / "tinytax.yaml").is_file():
        (root / "taxonomies" / "tinytax.yaml").write_text(TAXONOMY)
    for key, value in {
        "DATA_ROOT": root / "data",
        "TAXONOMY_DIRS": root / "taxonomies",
        "RUNS_DIR": root / "runs",
        "DEVICE": "cpu",
        "WORKERS": workers,
    }.items():
        patch.setenv(key, str(value))


def build_world(root: Path) -> World:
    """Images, a run, a FiftyOne dataset whose ground truth traces the run's predictions, and its prepared folder."""
    import fiftyone as fo

    from data_engineering import dataset_contract as contract
    from prepare.cli import prepare

    (root / "taxonomies").mkdir()
    (root / "taxonomies" / "tinytax.yaml").write_text(TAXONOMY)
    (root / "taxonomies" / "tinycoral.yaml").write_text(COARSER_TAXONOMY)  # evaluate also scores the run at it
    images = [_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    paths = []
    for i, image in enumerate(images):
        paths.append(root / "media" / f"Reef_2024_{i:02d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(paths[-1])
    run_dir = root / "runs" / "tiny-linear"
    make_run(run_dir)
    masks = predict_fp32(run_dir, images)
    counts = [np.bincount(m.ravel(), minlength=3) for m in masks]
    assert (counts[0][1:] > 0).all(), "the random head should predict both coral classes on image 0"
    drop_class = 1 if counts[0][1] >= counts[0][2] else 2

    name = f"test_eval_{uuid.uuid4().hex[:8]}"
    dataset = fo.Dataset(name)
    dataset.info = {contract.INFO_CREATED_BY: contract.CREATED_BY}
    samples = []
    for i, (path, mask) in enumerate(zip(paths, masks)):
        sample = fo.Sample(
            filepath=str(path), tags=["val"], metadata=fo.ImageMetadata(width=mask.shape[1], height=mask.shape[0])
        )
        sample[contract.GT_FIELD] = _polylines(mask, drop_class if i == 0 else None)
        sample["note"] = f"kept {i}"  # a field evaluate must never touch
        sample[contract.SITE], sample[contract.YEAR] = "Reef", "2024"  # as the importers set them from the file name
        samples.append(sample)
    ids = dataset.add_samples(samples)
    dataset.save()

    with pytest.MonkeyPatch.context() as patch:
        world_environment(root, patch)
        prepare(name, taxonomy="tinytax", workers=1)
        settings = load_settings()
    return World(root, settings, name, run_dir, masks, (0, drop_class), ids)


def evaluate_world(world: World, run_dir: Path | None = None, dataset: str | None = None, **options):
    """`evaluate_run` on the world in fp32 (the predictions the ground truth was made from); (report, printed text)."""
    from evaluate.pipeline import EvaluateOptions, evaluate_run

    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        report = evaluate_run(
            EvaluateOptions.from_settings(
                world.settings, run_dir or world.run_dir, dataset=dataset or world.dataset, precision="fp32", **options
            ),
            out,
        )
    return report, out.getvalue()
