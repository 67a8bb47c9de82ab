"""CoralNet-style point annotations (image, row, column, label) read, checked, written and imported.

Most reef monitoring is still scored on points: CoralNet's CSV export names its columns `Name`,
`Row`, `Column` and `Label` (or `Label code`), rows and columns counted in pixels from 0 at the
top-left corner. Imported points become `fo.Keypoints` on the samples (field `gt_points`), one
keypoint per point at the centre of its pixel, in FiftyOne's normalised coordinates:

    points = read_point_csv(text)                   # -> [PointAnnotation]; malformed rows named, all at once
    check_points(points, image_sizes)               # unknown images, points outside their image: listed
    write_point_csv(points)                         # the shape CoralNet's upload accepts
    python data_engineering/import_points.py annotations.csv --dataset-name moorea
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError, run
from common.image_files import ImageProblem
from common.table import format_table
from data_engineering import dataset_contract as contract
from data_engineering.local_images import displayed_size

NAME_COLUMNS = ("name", "image", "image name")
ROW_COLUMNS = ("row",)
COLUMN_COLUMNS = ("column", "col")
LABEL_COLUMNS = ("label", "label code", "label_code")


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
    name_at, row_at, column_at = (
        _column(header, n, w)
        for n, w in ((NAME_COLUMNS, "image name"), (ROW_COLUMNS, "row"), (COLUMN_COLUMNS, "column"))
    )
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
        raise UserError(
            f"the point CSV has {len(bad)} row(s) without a whole-number row and column (line {shown}); fix them"
        )
    return points


def check_points(points: Sequence[PointAnnotation], image_sizes: Mapping[str, tuple[int, int]]) -> None:
    """Refuse points naming images the dataset does not have, or lying outside their image, listing each kind.

    `image_sizes` maps file names to (height, width).
    """
    problems = []
    missing_images = sorted({p.image for p in points if p.image not in image_sizes})
    if missing_images:
        problems.append(f"{len(missing_images)} image(s) not in the dataset ({', '.join(missing_images[:5])})")
    outside = [
        p
        for p in points
        if p.image in image_sizes
        and not (0 <= p.row < image_sizes[p.image][0] and 0 <= p.column < image_sizes[p.image][1])
    ]
    if outside:
        first = outside[0]
        problems.append(
            f"{len(outside)} point(s) outside their image (e.g. {first.image} row {first.row} column {first.column})"
        )
    if problems:
        raise UserError("the point CSV has " + "; ".join(problems) + "; fix the CSV or import the missing photos first")


def write_point_csv(points: Iterable[PointAnnotation]) -> str:
    """CoralNet's upload shape: Name, Row, Column, Label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Name", "Row", "Column", "Label"])
    for point in points:
        writer.writerow([point.image, point.row, point.column, point.label])
    return buffer.getvalue()


def keypoint_xy(point: PointAnnotation, height: int, width: int) -> tuple[float, float]:
    """The point as FiftyOne's normalised (x, y): the centre of its pixel."""
    return (point.column + 0.5) / width, (point.row + 0.5) / height


def point_from_keypoint(image: str, label: str, x: float, y: float, height: int, width: int) -> PointAnnotation:
    """The inverse of `keypoint_xy`: the pixel a normalised keypoint lies in."""
    return PointAnnotation(image, min(int(y * height), height - 1), min(int(x * width), width - 1), label)


def import_points(
    dataset_name: str, points: Sequence[PointAnnotation], field: str = contract.POINTS_FIELD
) -> dict[str, int]:
    """Put the points on their samples as `fo.Keypoints` (replacing that field there); returns points per label.

    Samples are found by file name; a name shared by several samples is refused, since its points could
    belong to any of them.
    """
    import fiftyone as fo

    from data_engineering.fiftyone_writer import load_existing

    dataset = load_existing(dataset_name)
    if dataset.has_sample_field(field) and dataset.get_field(field).document_type is not fo.Keypoints:
        raise UserError(
            f"dataset {dataset_name!r} already has a field {field!r} that is not points; choose another --field"
        )
    names: dict[str, list[tuple[str, int, int]]] = {}
    for sample_id, filepath, metadata in zip(
        dataset.values("id"), dataset.values("filepath"), dataset.values("metadata")
    ):
        if metadata is not None and metadata.width:
            width, height = metadata.width, metadata.height
        else:  # a sample added without metadata: the photo's size as displayed, as import_images.py records it
            try:
                width, height = displayed_size(Path(filepath))
            except (ImageProblem, OSError):
                continue  # unreadable: its points are refused as naming an image the dataset lacks
        names.setdefault(filepath.replace("\\", "/").rsplit("/", 1)[-1], []).append((sample_id, height, width))
    wanted = {p.image for p in points}
    shared = sorted(name for name in wanted if len(names.get(name, ())) > 1)
    if shared:
        raise UserError(
            f"{len(shared)} file name(s) of the CSV belong to several samples of {dataset_name!r} "
            f"({', '.join(shared[:5])}); import the points into a dataset where names are unique"
        )
    check_points(points, {name: places[0][1:] for name, places in names.items()})
    by_image: dict[str, list[PointAnnotation]] = {}
    for point in points:
        by_image.setdefault(point.image, []).append(point)
    ids, values = [], []
    for name, group in by_image.items():
        sample_id, height, width = names[name][0]
        ids.append(sample_id)
        values.append(
            fo.Keypoints(keypoints=[fo.Keypoint(label=p.label, points=[keypoint_xy(p, height, width)]) for p in group])
        )
    dataset.select(ids, ordered=True).set_values(field, values)
    counts: dict[str, int] = {}
    for point in points:
        counts[point.label] = counts.get(point.label, 0) + 1
    return counts


def import_points_command(csv_file: str, dataset_name: str, field: str = contract.POINTS_FIELD) -> None:
    """Import CoralNet-style point annotations (Name, Row, Column, Label) onto a dataset's samples.

    Args:
        csv_file: the CSV (CoralNet's annotation export, or any CSV with those columns; rows and columns from 0).
        dataset_name: the FiftyOne dataset holding the photos, matched by file name.
        field: the sample field for the points (replaced on the samples the CSV names).
    """
    path = Path(csv_file).expanduser()
    if not path.is_file():
        raise UserError(f"no point CSV at {path}; pass the CSV exported from CoralNet")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; export the points from CoralNet as CSV") from None
    points = read_point_csv(text)
    counts = import_points(dataset_name, points, field)
    print(format_table(["label", "points"], sorted(counts.items())))
    print(f"{len(points)} points on {len({p.image for p in points})} images in {dataset_name!r}, field {field!r}")


def main() -> None:
    """Entry point of data_engineering/import_points.py."""
    run(import_points_command)
