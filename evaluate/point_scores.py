"""A run's dense predictions scored at imported point annotations (CoralNet-style), as reef monitoring scores.

    python data_engineering/import_points.py coralnet_annotations.csv --dataset-name moorea_2024
    python evaluate/predict.py --run runs/<name> --dataset moorea_2024
    python evaluate/score_points.py --run runs/<name> --dataset moorea_2024

Every sample with points (`gt_points`, fo.Keypoints) and a prediction of the run (`pred_<key>`, made by
predict.py or evaluate.py) is read: each point's label is mapped to the run's classes by its taxonomy
(raw labels, aliases, class names), the predicted mask is read at the point's pixel, and the confusion of
annotated against predicted classes gives per-class point accuracy and point-based cover, beside the dense
cover of the same masks. Labels the taxonomy does not know are listed and refused before anything is
scored; labels it drops are counted and left out. Files go to `runs/<run>/predict/<dataset>/` (docs/survey.md).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from common.cli import UserError
from common.fileio import write_text_atomic
from common.progress import progress
from common.table import format_table
from data_engineering import dataset_contract as contract
from data_engineering.coralnet_points import PointAnnotation, point_from_keypoint
from evaluate import writeback
from evaluate.ecology import image_cover
from evaluate.fields import RunFields
from evaluate.points import PointScores, score_points
from evaluate.survey import predict_dir
from models.checkpoint import read_checkpoint
from prepare.mask_png import read_mask
from prepare.taxonomy import BUILTIN_DIR, Taxonomy, load_taxonomy

POINT_FILES = ("point_scores.csv", "point_confusion.csv", "point_cover.csv")


@dataclass(frozen=True)
class ScorePointsOptions:
    """One scoring of a run's predictions at a dataset's points, resolved at the command line."""

    run_dir: Path
    dataset: str
    field: str = contract.POINTS_FIELD
    tags: tuple[str, ...] = ()
    which: str = "best"
    taxonomy_dirs: tuple[Path, ...] = (BUILTIN_DIR,)


def label_classes(labels: Sequence[str], taxonomy: Taxonomy, classes: Sequence[str]) -> dict[str, int | None]:
    """Each point label's class index (None: the taxonomy drops it); unknown labels are listed in one error.

    A label is a raw label of the taxonomy (or an alias), or one of the run's class names.
    """
    mapping: dict[str, int | None] = {}
    unknown = []
    for label in sorted(set(labels)):
        if label in classes:
            mapping[label] = list(classes).index(label)
            continue
        try:
            mapping[label] = taxonomy.class_index(label)
        except KeyError:
            unknown.append(label)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UserError(
            f"the points carry {len(unknown)} label(s) taxonomy {taxonomy.name!r} does not know ({shown}); add them as "
            f"labels or aliases of its finest level (docs/taxonomies.md) or fix the CSV and import it again"
        )
    return mapping


def sample_points_of(keypoints: Any, image: str, height: int, width: int) -> tuple[list[PointAnnotation], int]:
    """The sample's keypoints as pixel points, and how many lie outside the image (not scored)."""
    points, outside = [], 0
    for keypoint in keypoints.keypoints if keypoints is not None else []:
        for x, y in keypoint.points:
            if not (0 <= x < 1 and 0 <= y < 1):
                outside += 1
                continue
            points.append(point_from_keypoint(image, keypoint.label or "", x, y, height, width))
    return points, outside


def _csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(
        ["" if isinstance(v, float) and np.isnan(v) else round(v, 4) if isinstance(v, float) else v for v in row]
        for row in rows
    )
    return buffer.getvalue()


def score_dataset_points(options: ScorePointsOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Score the run's predictions at the dataset's points; writes POINT_FILES and returns the figures."""
    run_dir = options.run_dir.expanduser().resolve()
    _, spec = read_checkpoint(run_dir, options.which)
    taxonomy = load_taxonomy(spec.taxonomy, list(options.taxonomy_dirs))
    classes = list(spec.classes)
    dataset = writeback.load_dataset(options.dataset)
    fields = RunFields.for_run(run_dir.name)
    writeback.check_owner(dataset, fields, run_dir)
    record = writeback.evaluations(dataset).get(fields.eval_key)
    if record is None or not dataset.has_sample_field(fields.prediction):
        raise UserError(
            f"dataset {options.dataset!r} has no prediction of run {run_dir.name}; run "
            f"python evaluate/predict.py --run {run_dir} --dataset {options.dataset} first"
        )
    if record.get("taxonomy") not in (None, spec.taxonomy):
        raise UserError(
            f"the predictions of {run_dir.name} in {options.dataset!r} are of taxonomy {record['taxonomy']!r} but the run "
            f"now predicts {spec.taxonomy!r}; predict again with python evaluate/predict.py before scoring points"
        )
    if not dataset.has_sample_field(options.field):
        raise UserError(
            f"dataset {options.dataset!r} has no point field {options.field!r}; import CoralNet points with "
            f"python data_engineering/import_points.py <csv> --dataset-name {options.dataset}"
        )
    view = dataset.exists(options.field)
    if options.tags:
        view = view.match_tags(list(options.tags))
    ids, paths = view.values("id"), view.values("filepath")
    keypoints, predictions = view.values(options.field), view.values(fields.prediction)
    if not ids:
        raise UserError(f"no sample of {options.dataset!r} has points in {options.field!r} with these --tags")
    labels = [k.label or "" for kp in keypoints if kp is not None for k in kp.keypoints]
    mapping = label_classes(labels, taxonomy, classes)
    unpredicted = [Path(p).name for p, pred in zip(paths, predictions) if pred is None or not pred.mask_path]
    if len(unpredicted) == len(ids):
        raise UserError(
            f"none of the {len(ids)} samples with points has a prediction of run {run_dir.name}; "
            f"run python evaluate/predict.py --run {run_dir} --dataset {options.dataset} first"
        )
    pairs, cover_rows, dropped, outside = [], [], 0, 0
    class_index = {label: index for label, index in mapping.items() if index is not None}
    rows = zip(ids, paths, keypoints, predictions)
    for sample_id, path, kp, prediction in progress(rows, total=len(ids), desc="score points", unit="image", file=out):
        if prediction is None or not prediction.mask_path:
            continue
        mask = read_mask(prediction.mask_path)
        image = Path(path).name
        points, off = sample_points_of(kp, image, *mask.shape)
        outside += off
        kept = [p for p in points if mapping[p.label] is not None]
        dropped += len(points) - len(kept)
        one = score_points([(mask, kept)], class_index, classes)
        pairs.append((mask, kept))
        dense = image_cover(mask, len(classes))
        for index, name in enumerate(classes):
            cover_rows.append(
                [
                    sample_id,
                    image,
                    name,
                    len(kept),
                    float(one.annotated_cover[index]),
                    float(one.predicted_point_cover[index]),
                    float(dense[index]),
                ]
            )
    scores = score_points(pairs, class_index, classes)
    dense_mean = (
        np.mean([[r[6] for r in cover_rows[i : i + len(classes)]] for i in range(0, len(cover_rows), len(classes))], 0)
        if cover_rows
        else np.zeros(len(classes))
    )
    out_dir = predict_dir(run_dir, options.dataset)
    write_files(scores, cover_rows, dense_mean, out_dir)
    report = {
        "images": len(pairs),
        "points": int(scores.confusion.sum()),
        "accuracy": scores.accuracy,
        "dropped": dropped,
        "outside": outside,
        "unpredicted": unpredicted,
        "scores": scores,
        "out_dir": str(out_dir),
    }
    print(format_point_table(scores, dense_mean), file=out)
    return report


def per_class_rows(scores: PointScores, dense_mean: np.ndarray) -> list[list[object]]:
    annotated = scores.confusion.sum(axis=1)
    return [
        [
            name,
            int(annotated[i]),
            float(scores.per_class_accuracy[i]),
            float(scores.annotated_cover[i]),
            float(scores.predicted_point_cover[i]),
            float(dense_mean[i]),
        ]
        for i, name in enumerate(scores.class_names)
    ]


PER_CLASS_COLUMNS = [
    "class",
    "points",
    "point_accuracy",
    "annotated_point_cover",
    "predicted_point_cover",
    "dense_cover",
]


def write_files(scores: PointScores, cover_rows: list[list[object]], dense_mean: np.ndarray, out_dir: Path) -> None:
    """point_scores.csv (per class), point_confusion.csv (annotated x predicted) and point_cover.csv (per image)."""
    write_text_atomic(out_dir / "point_scores.csv", _csv(PER_CLASS_COLUMNS, per_class_rows(scores, dense_mean)))
    names = scores.class_names
    write_text_atomic(
        out_dir / "point_confusion.csv",
        _csv(["annotated \\ predicted", *names], [[n, *map(int, r)] for n, r in zip(names, scores.confusion)]),
    )
    write_text_atomic(
        out_dir / "point_cover.csv",
        _csv(
            ["sample_id", "image", "class", "points", "annotated_point_cover", "predicted_point_cover", "dense_cover"],
            cover_rows,
        ),
    )


def format_point_table(scores: PointScores, dense_mean: np.ndarray) -> str:
    def pct(value: float) -> str:
        return "-" if np.isnan(value) else f"{value * 100:.1f}"

    annotated = scores.confusion.sum(axis=1)
    rows = [
        [
            name,
            int(annotated[i]),
            pct(float(scores.per_class_accuracy[i])),
            f"{scores.annotated_cover[i]:.1f}",
            f"{scores.predicted_point_cover[i]:.1f}",
            f"{dense_mean[i]:.1f}",
        ]
        for i, name in enumerate(scores.class_names)
    ]
    table = format_table(
        ["class", "points", "point accuracy %", "annotated cover %", "predicted at points %", "dense cover %"], rows
    )
    return f"{table}\npoints scored: {int(scores.confusion.sum())}, point accuracy {pct(scores.accuracy)}%"
