"""Dense predictions read at annotated points, and points sampled from predictions (CoralNet-style).

scores = score_points(pairs, taxonomy_index, class_names)   # per-class point accuracy, point vs dense cover
sampled = sample_points(mask.shape, 25, "stratified")       # (row, column), one per cell of a 5 x 5 grid
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.cli import UserError
from data_engineering.coralnet_points import PointAnnotation

SAMPLING_MODES = ("random", "stratified")


@dataclass(frozen=True)
class PointScores:
    """Dense predictions read at annotated points."""

    class_names: list[str]
    confusion: np.ndarray  # [K, K] annotated class x predicted class, point counts

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else math.nan

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Share of each annotated class's points predicted as that class (NaN for classes without points)."""
        annotated = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(annotated > 0, np.diag(self.confusion) / annotated, np.nan)

    @property
    def annotated_cover(self) -> np.ndarray:
        """Point-based cover (percent of points) of the annotations."""
        total = self.confusion.sum()
        return self.confusion.sum(axis=1) / total * 100 if total else np.zeros(len(self.class_names))

    @property
    def predicted_point_cover(self) -> np.ndarray:
        """Point-based cover of the prediction read at the same points."""
        total = self.confusion.sum()
        return self.confusion.sum(axis=0) / total * 100 if total else np.zeros(len(self.class_names))


def score_points(
    pairs: Iterable[tuple[np.ndarray, Sequence[PointAnnotation]]],
    class_index: Mapping[str, int],
    class_names: Sequence[str],
) -> PointScores:
    """Confusion of annotated labels against the predicted masks at the points (`pairs`: mask, its points)."""
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    for mask, points in pairs:
        if not points:
            continue
        rows = np.array([p.row for p in points])
        columns = np.array([p.column for p in points])
        truth = np.array([class_index[p.label] for p in points])
        predicted = mask[rows, columns].astype(np.int64)
        keep = predicted < k  # an ignored predicted pixel (255) is not a class
        np.add.at(confusion, (truth[keep], predicted[keep]), 1)
    return PointScores(list(class_names), confusion)


def sample_points(mask_shape: tuple[int, int], count: int, mode: str = "random", seed: int = 0) -> np.ndarray:
    """`count` (row, column) points over an image: uniform random, or stratified (one per cell of a near-square grid).

    Stratified sampling is CoralNet's "stratified random": the image is cut into cells and each cell gets a
    random point, so points spread over the quadrat; with a count that is not a product of the grid, the
    first cells in row-major order get the remainder.
    """
    if mode not in SAMPLING_MODES:
        raise UserError(f"point sampling {mode!r} is not one of {', '.join(SAMPLING_MODES)}")
    if count < 1:
        raise UserError(f"the number of points per image must be positive, not {count}")
    height, width = mask_shape
    rng = np.random.default_rng(seed)
    if mode == "random":
        return np.stack([rng.integers(0, height, count), rng.integers(0, width, count)], axis=1)
    rows_n = max(1, int(math.floor(math.sqrt(count))))
    columns_n = math.ceil(count / rows_n)
    cells = [(r, c) for r in range(rows_n) for c in range(columns_n)][:count]
    row_edges = np.linspace(0, height, rows_n + 1).astype(int)
    column_edges = np.linspace(0, width, columns_n + 1).astype(int)
    out = np.empty((len(cells), 2), dtype=np.int64)
    for i, (r, c) in enumerate(cells):
        out[i, 0] = rng.integers(row_edges[r], max(row_edges[r + 1], row_edges[r] + 1))
        out[i, 1] = rng.integers(column_edges[c], max(column_edges[c + 1], column_edges[c] + 1))
    return out
