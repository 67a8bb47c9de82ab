"""Segmentation metrics, all computed from one accumulated pixel confusion matrix.

Accumulating counts (never averaging per-image scores) makes the split's numbers independent of
how the images are batched or tiled, and lets train's validation and `evaluate` share one code
path. Rows are ground truth, columns are prediction (the convention of scikit-learn, torchmetrics
and FiftyOne). Pixels labelled `IGNORE_INDEX` in the ground truth are not counted.

A class is NaN where its score is 0/0: IoU and Dice when the class is absent from both ground truth
and prediction, recall when it is absent from the ground truth, precision when it is never
predicted. NaNs are left out of every mean (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.labels import IGNORE_INDEX

ArrayLike = np.ndarray | torch.Tensor


def confusion_matrix(
    target: ArrayLike, prediction: ArrayLike, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """`[K, K]` int64 pixel counts, rows ground truth, columns prediction, ignored pixels dropped.

    Accepts numpy arrays or tensors of any (equal) shape; tensors are counted on their own device.
    """
    if tuple(target.shape) != tuple(prediction.shape):
        raise ValueError(f"target shape {tuple(target.shape)} differs from prediction shape {tuple(prediction.shape)}")
    if isinstance(target, torch.Tensor) or isinstance(prediction, torch.Tensor):
        t = torch.as_tensor(target).reshape(-1).long()
        p = torch.as_tensor(prediction, device=t.device).reshape(-1).long()
        keep = t != ignore_index
        t, p = t[keep], p[keep]
        _check_range(int(t.min()) if t.numel() else 0, int(t.max()) if t.numel() else 0, "target", num_classes)
        _check_range(int(p.min()) if p.numel() else 0, int(p.max()) if p.numel() else 0, "prediction", num_classes)
        counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
        return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)
    truth = np.asarray(target).reshape(-1).astype(np.int64)
    predicted = np.asarray(prediction).reshape(-1).astype(np.int64)
    kept = truth != ignore_index
    truth, predicted = truth[kept], predicted[kept]
    if truth.size:
        _check_range(int(truth.min()), int(truth.max()), "target", num_classes)
        _check_range(int(predicted.min()), int(predicted.max()), "prediction", num_classes)
    matrix = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return matrix.reshape(num_classes, num_classes)


def _check_range(low: int, high: int, what: str, num_classes: int) -> None:
    if low < 0 or high >= num_classes:
        raise ValueError(f"{what} holds class index {low if low < 0 else high}, outside 0..{num_classes - 1}")


class ConfusionAccumulator:
    """Sums confusion matrices over images; `update` one image (or batch) at a time."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: ArrayLike, prediction: ArrayLike) -> np.ndarray:
        """Add one image's counts; returns that image's own matrix (for per-image scores)."""
        image_matrix = confusion_matrix(target, prediction, self.num_classes, self.ignore_index)
        self.matrix += image_matrix
        return image_matrix


@dataclass(frozen=True)
class SegmentationMetrics:
    """Per-class arrays (length K, NaN where undefined) and the summary numbers derived from them."""

    class_names: tuple[str, ...]
    background_index: int | None
    iou: np.ndarray
    accuracy: np.ndarray  # recall: share of the class's ground-truth pixels predicted as the class
    precision: np.ndarray
    dice: np.ndarray  # = F1
    gt_pixels: np.ndarray
    predicted_pixels: np.ndarray
    miou: float  # over coral classes (background left out)
    miou_with_background: float
    mdice: float  # over coral classes
    macc: float  # mean recall over all classes (MMSegmentation's mAcc)
    pixel_accuracy: float  # aAcc: correct pixels / counted pixels
    fwiou: float  # IoU weighted by ground-truth pixel frequency
    matrix: np.ndarray  # the [K, K] pixel confusion matrix all of the above come from (rows ground truth)

    def summary(self) -> dict[str, float | None]:
        """The scalar metrics, NaN as None (JSON-ready)."""
        keys = ("miou", "miou_with_background", "mdice", "macc", "pixel_accuracy", "fwiou")
        return {k: _none_if_nan(getattr(self, k)) for k in keys}

    def per_class(self) -> list[dict[str, object]]:
        """One row per class, NaN as None (JSON/CSV-ready)."""
        return [
            {
                "class": name,
                "iou": _none_if_nan(self.iou[i]),
                "accuracy": _none_if_nan(self.accuracy[i]),
                "precision": _none_if_nan(self.precision[i]),
                "dice": _none_if_nan(self.dice[i]),
                "gt_pixels": int(self.gt_pixels[i]),
                "predicted_pixels": int(self.predicted_pixels[i]),
            }
            for i, name in enumerate(self.class_names)
        ]


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, NaN where the denominator is 0 (0/0 is undefined, not 0)."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def compute_metrics(
    matrix: np.ndarray, class_names: Sequence[str], background_index: int | None = 0
) -> SegmentationMetrics:
    """Every metric from one confusion matrix; `background_index` is left out of the coral means."""
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match {len(class_names)} class names")
    tp = np.diag(matrix).astype(np.float64)
    gt = matrix.sum(axis=1).astype(np.float64)
    pred = matrix.sum(axis=0).astype(np.float64)
    total = gt.sum()
    iou = _divide(tp, gt + pred - tp)
    coral = np.ones(len(class_names), dtype=bool)
    if background_index is not None:
        coral[background_index] = False
    dice = _divide(2 * tp, gt + pred)
    accuracy = _divide(tp, gt)
    return SegmentationMetrics(
        class_names=tuple(class_names),
        background_index=background_index,
        iou=iou,
        accuracy=accuracy,
        precision=_divide(tp, pred),
        dice=dice,
        gt_pixels=gt.astype(np.int64),
        predicted_pixels=pred.astype(np.int64),
        miou=_nanmean(iou[coral]),
        miou_with_background=_nanmean(iou),
        mdice=_nanmean(dice[coral]),
        macc=_nanmean(accuracy),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        fwiou=float(np.nansum(gt / total * iou)) if total else float("nan"),
        matrix=matrix,
    )


def cover_percent(mask: ArrayLike, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Percent cover of each class over the image's counted pixels (ignored pixels left out).

    Ecologists report cover over the scored area of the quadrat, so unlabelled pixels are excluded
    from the denominator; an image with no counted pixel gives NaN.
    """
    values = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).reshape(-1).astype(np.int64)
    values = values[values != ignore_index]
    counts = np.bincount(values, minlength=num_classes)[:num_classes].astype(np.float64)
    return _divide(100.0 * counts, np.full(num_classes, counts.sum()))


def cover_from_matrix(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ground-truth cover %, predicted cover %) per class over the pixels the matrix counted.

    Both use the same pixels (those with ground truth), so the two covers are comparable.
    """
    gt = matrix.sum(axis=1).astype(np.float64)
    pred = matrix.sum(axis=0).astype(np.float64)
    total = np.full(gt.shape, gt.sum())
    return _divide(100.0 * gt, total), _divide(100.0 * pred, total)


@dataclass(frozen=True)
class CoverErrors:
    """Cover error per class over a split's images (percentage points)."""

    mae: np.ndarray  # mean |predicted - ground truth|
    bias: np.ndarray  # mean (predicted - ground truth): > 0 means the model over-reports the class
    images: int


def cover_errors(gt_cover: np.ndarray, predicted_cover: np.ndarray) -> CoverErrors:
    """MAE and bias per class from `[N, K]` per-image covers; images with NaN cover are skipped."""
    gt_cover = np.asarray(gt_cover, dtype=np.float64).reshape(-1, np.shape(gt_cover)[-1])
    predicted_cover = np.asarray(predicted_cover, dtype=np.float64).reshape(gt_cover.shape)
    diff = predicted_cover - gt_cover
    valid = ~np.isnan(diff)
    counts = valid.sum(axis=0)
    mae = _divide(np.where(valid, np.abs(diff), 0).sum(axis=0), counts)
    bias = _divide(np.where(valid, diff, 0).sum(axis=0), counts)
    return CoverErrors(mae=mae, bias=bias, images=int(valid.any(axis=1).sum()))


def map_classes(mask: ArrayLike, mapping: Sequence[int], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A class-index mask with every class `i` replaced by `mapping[i]` (e.g. a genus by its family); ignored pixels
    stay ignored. `mapping` is one target index per source class, background included."""
    lookup = np.full(256, ignore_index, dtype=np.int64)
    lookup[: len(mapping)] = np.asarray(mapping, dtype=np.int64)
    values = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"mask holds class index {values.min() if values.min() < 0 else values.max()}, outside 0..255")
    return lookup[values]


def merge_classes(matrix: np.ndarray, mapping: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """The confusion matrix of the masks mapped through `mapping` (`map_classes`), from the matrix of the unmapped
    ones: counts summed over the source classes that land in each target class, rows and columns alike. Exact,
    because a pixel's mapped ground truth and prediction depend only on its unmapped ones."""
    index = np.asarray(mapping, dtype=np.int64)
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.shape != (len(index), len(index)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match a mapping of {len(index)} classes")
    k = int(index.max()) + 1 if num_classes is None else num_classes
    merged = np.zeros((k, k), dtype=np.int64)
    np.add.at(merged, (index[:, None], index[None, :]), matrix)
    return merged
