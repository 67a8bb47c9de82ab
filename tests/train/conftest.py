"""Tiny prepared folders for the train tests: an easy colour-to-class task on a grid of cells.

Each image is a grid of 28-pixel cells (two patches of the tiny ViT); a cell's class decides its
colour (plus noise), so even a random backbone's features separate the classes and a head trained
for a few steps beats chance.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common.fileio import sha256_file
from prepare.layout import ManifestEntry, image_relpath, mask_relpath, write_metadata
from prepare.mask_png import encode_mask_png, palette_bytes

CLASSES = ["Acropora", "Porites"]
PALETTE = [(255, 0, 0), (0, 0, 255)]
COLOURS = np.array([[60, 160, 60], [220, 40, 40], [40, 40, 220]], dtype=np.float64)  # background, class 1, class 2
CELL = 28


def toy_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its mask: random classes per cell, colour by class, noise on top."""
    cells = rng.integers(0, 3, size=(size // CELL, size // CELL))
    mask = np.kron(cells, np.ones((CELL, CELL), dtype=np.int64)).astype(np.uint8)
    image = COLOURS[mask] + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_sample(root: Path, split: str, stem: str, image: np.ndarray, mask: np.ndarray) -> ManifestEntry:
    image_rel, mask_rel = image_relpath(split, f"{stem}.png"), mask_relpath(split, stem)
    (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
    (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (root / mask_rel).write_bytes(encode_mask_png(mask, palette_bytes([(0, 0, 0), *PALETTE])))
    counts = np.bincount(mask.ravel(), minlength=3)
    return ManifestEntry(
        sample_id=stem,
        split=split,
        image=image_rel,
        mask=mask_rel,
        width=image.shape[1],
        height=image.shape[0],
        source_image=stem,
        image_sha256=sha256_file(root / image_rel),
        mask_sha256=sha256_file(root / mask_rel),
        source_key=stem,
        palette_key="toy",
        pixels={str(i): int(c) for i, c in enumerate(counts) if c},
    )


def write_prepared(root: Path, train: int = 4, val: int = 2, size: int = 112, seed: int = 0) -> Path:
    """A prepared folder in the issue-3 layout with `train` and `val` toy images."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            entries.append(write_sample(root, split, f"site_2024_{split}{i:02d}", *toy_pair(rng, size)))
    info = {"taxonomy": {"name": "toy"}, "classes": ["background", *CLASSES], "ignore_index": 255}
    write_metadata(root, CLASSES, PALETTE, info, entries)
    return root


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_prepared(tmp_path / "prepared" / "toy_toy")


def tiny_overrides(tmp_path: Path, data_dir: Path, **more: object) -> dict[str, object]:
    """Config overrides for a run that takes seconds: tiny ViT, 56-pixel crops, a few steps."""
    base = {
        "backbone": "tiny_dinov2",
        "data_dir": str(data_dir),
        "runs_dir": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
        "crop": 56,
        "window": 56,
        "views_per_image": 4,
        "scale_range": [1.0, 1.0],
        "batch_size": 8,
        "steps": 30,
        "warmup_steps": 3,
        "eval_every": 15,
        "log_every": 5,
        "lr": 3e-3,
        "val_batch_size": 8,
        "device": "cpu",
        "workers": 0,
        "seed": 0,
        "patience": 0,
    }
    return base | more
