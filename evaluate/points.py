"""Point annotations the way most reef monitoring is scored (CoralNet): image, row, column, label.

CoralNet's CSV export names its columns `Name`, `Row`, `Column` and `Label` (or `Label code`), with
rows and columns counted in pixels from 0 at the top-left corner. This module reads and writes that
shape, scores dense predictions at the points, and samples points from predictions:

    points = read_point_csv(text)                           # -> [PointAnnotation]; bad rows named, all at once
    scores = score_points(pairs, class_index, names)        # per-class point accuracy, point vs dense cover
    sampled = sample_points(mask, 25, "stratified", seed=0) # (row, column) pairs, 5 x 5 cells, one point each
    write_point_csv(rows)                                   # a CSV CoralNet's upload accepts
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.cli import UserError

NAME_COLUMNS = ("name", "image", "image name")
ROW_COLUMNS = ("row",)
COLUMN_COLUMNS = ("column", "col")
LABEL_COLUMNS = ("label", "label code", "label_code")
SAMPLING_MODES = ("random", "stratified")


@dataclass(frozen=True)
class PointAnnotation:
    """One annotated point: the image's file name, pixel row and column (0-based), and its label."""

    image: str
    row: int
    column: int
    label: str


def _column(header: Sequence[str], names: Sequence[str], what: str) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise UserError(f"the point CSV has no {what} column (looked for {', '.join(names)}); header: {', '.join(header)}")


def read_point_csv(text: str) -> list[PointAnnotation]:
    """Points from a CoralNet-style CSV; every malformed row is named in one error, none silently dropped."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if not header:
        raise UserError("the point CSV is empty; export the annotations from CoralNet as CSV")
    name_at, row_at, column_at = (_column(header, n, w) for n, w in
                                  ((NAME_COLUMNS, "image name"), (ROW_COLUMNS, "row"), (COLUMN_COLUMNS, "column")))
    label_at = _column(header, LABEL_COLUMNS, "label")
    points, bad = [], []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        try:
            row, column = float(values[row_at]), float(values[column_at])
            if not (math.isfinite(row) and math.isfinite(column)) or row != int(row) or column != int(column):
                raise ValueError
            points.append(PointAnnotation(values[name_at].strip(), int(row), int(column), values[label_at].strip()))
        except (IndexError, ValueError):
            bad.append(line)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise UserError(f"the point CSV has {len(bad)} row(s) without a whole-number row and column (line {shown}); fix them")
    return points


def check_points(points: Sequence[PointAnnotation], image_sizes: Mapping[str, tuple[int, int]],
                 labels: Iterable[str]) -> None:
    """Refuse points naming unknown images or labels, or lying outside their image, listing each kind."""
    known = set(labels)
    problems = []
    missing_images = sorted({p.image for p in points if p.image not in image_sizes})
    if missing_images:
        problems.append(f"{len(missing_images)} image(s) not in the dataset ({', '.join(missing_images[:5])})")
    missing_labels = sorted({p.label for p in points if p.label not in known})
    if missing_labels:
        problems.append(f"label(s) the taxonomy does not know ({', '.join(missing_labels[:10])})")
    outside = [p for p in points if p.image in image_sizes and not (
        0 <= p.row < image_sizes[p.image][0] and 0 <= p.column < image_sizes[p.image][1])]
    if outside:
        first = outside[0]
        problems.append(f"{len(outside)} point(s) outside their image (e.g. {first.image} row {first.row} column {first.column})")
    if problems:
        raise UserError("the point CSV has " + "; ".join(problems) + "; fix the CSV or map its labels in the taxonomy")


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


def score_points(pairs: Iterable[tuple[np.ndarray, Sequence[PointAnnotation]]], class_index: Mapping[str, int],
                 class_names: Sequence[str]) -> PointScores:
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


def write_point_csv(points: Iterable[PointAnnotation]) -> str:
    """CoralNet's upload shape: Name, Row, Column, Label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Name", "Row", "Column", "Label"])
    for point in points:
        writer.writerow([point.image, point.row, point.column, point.label])
    return buffer.getvalue()
