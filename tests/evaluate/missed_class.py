"""A tiny dataset whose prediction misses one class entirely (Astreopora), for what the panel must still show."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np

from evaluate.fields import RunFields, gt_colonies_field, gt_segmentation_field
from models.metrics import confusion_matrix
from prepare.layout import png_palette
from prepare.mask_png import encode_mask_png

FOUR = ["background", "Acropora", "Porites", "Astreopora"]
FOUR_PALETTE = [[0, 0, 0], [230, 25, 75], [128, 0, 0], [60, 180, 75]]  # FiftyOne would order them by colour: reversed


def _write_mask(path: Path, mask: np.ndarray) -> str:
    path.write_bytes(encode_mask_png(mask.astype(np.uint8), png_palette(FOUR_PALETTE)))
    return str(path)


def _square(label: str, x0: float, y0: float, side: float):
    import fiftyone as fo

    return fo.Polyline(
        label=label,
        points=[[(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]],
        closed=True,
        filled=True,
    )


def astreopora_missed_dataset(tmp_path: Path) -> tuple[Any, list[str], RunFields, np.ndarray]:
    """Two images whose Astreopora the prediction never finds (no Astreopora pixel, no Astreopora colony), not yet
    evaluated: (dataset, sample ids, the run's fields, the pixel confusion matrix by an independent count)."""
    import fiftyone as fo

    fields = RunFields.for_run("four-classes")
    dataset = fo.Dataset(f"test_panel_{uuid.uuid4().hex[:8]}")
    gt, predicted, samples = [], [], []
    for i in range(2):
        truth = np.zeros((40, 40), np.uint8)
        truth[:20, :20], truth[20:, 20:], truth[:10, 30:] = 1, 2, 3  # Acropora, Porites, Astreopora
        truth[35:, :5] = 255  # ignored pixels: counted by neither
        guess = np.zeros_like(truth)
        guess[:20, :18], guess[22:, 20:] = 1, 2
        guess[:10, 30:] = 1 if i == 0 else 0  # the Astreopora taken for Acropora, then for background
        gt.append(truth)
        predicted.append(guess)
        sample = fo.Sample(filepath=str(tmp_path / f"image_{i}.png"))
        sample[gt_segmentation_field("four")] = fo.Segmentation(mask_path=_write_mask(tmp_path / f"gt_{i}.png", truth))
        sample[fields.prediction] = fo.Segmentation(mask_path=_write_mask(tmp_path / f"pred_{i}.png", guess))
        sample[gt_colonies_field("four")] = fo.Polylines(
            polylines=[
                _square("Acropora", 0, 0, 0.5),
                _square("Porites", 0.5, 0.5, 0.5),
                _square("Astreopora", 0.75, 0, 0.25),
            ]
        )
        sample[fields.colonies] = fo.Polylines(
            polylines=[_square("Acropora", 0, 0, 0.45), _square("Porites", 0.5, 0.55, 0.45)]
        )
        samples.append(sample)
    ids = dataset.add_samples(samples)
    return dataset, ids, fields, sum(confusion_matrix(t, p, len(FOUR)) for t, p in zip(gt, predicted))
