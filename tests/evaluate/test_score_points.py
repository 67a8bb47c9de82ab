"""Predictions scored at CoralNet-style points: import a CoralNet-shaped CSV, predict, score from the command line."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_survey import predict, survey  # noqa: F401  (the fixture: a tiny survey with a run)

from common.cli import UserError
from common.settings import REPO_ROOT, load_settings
from data_engineering.coralnet_points import import_points, read_point_csv
from evaluate.ecology import image_cover
from evaluate.points import sample_points
from prepare.mask_png import read_mask

CLASSES = ["background", "Acropora", "Porites"]
RAW = {0: "background", 1: "acro", 2: "Porites"}  # an alias and class names, as a CoralNet labelset may use


def coralnet_csv(rows: list[tuple[str, int, int, str]]) -> str:
    """The shape of CoralNet's annotation export: metadata columns around Name, Row, Column, Label."""
    lines = ["Name,Date,Aux1,Aux2,Row,Column,Label,Annotator"]
    lines += [f"{name},2024-05-01,Reef,Q1,{row},{column},{label},someone" for name, row, column, label in rows]
    return "\n".join(lines) + "\n"


def score(run_dir: Path, dataset: str, **options):
    from evaluate.point_scores import ScorePointsOptions, score_dataset_points
    from prepare.taxonomy import taxonomy_dirs

    out = io.StringIO()
    dirs = tuple(taxonomy_dirs(load_settings().taxonomy_dirs))
    return score_dataset_points(
        ScorePointsOptions(run_dir, dataset, taxonomy_dirs=dirs, **options), out
    ), out.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_points_scored_from_the_command_line(survey):  # noqa: F811
    _, dataset, run_dir, _ = survey
    predict(run_dir, dataset.name)
    dataset.reload()
    masks = {Path(s.filepath).name: read_mask(s.pred_tiny_linear.mask_path) for s in dataset}
    rows, truth, wrong = [], [], 0
    for index, (name, mask) in enumerate(sorted(masks.items())):
        for k, (row, column) in enumerate(sample_points(mask.shape, 9, "stratified", seed=index)):
            predicted = int(mask[row, column])
            annotated = (predicted + 1) % 3 if k == 0 else predicted  # the first point of each photo disagrees
            wrong += k == 0
            rows.append((name, int(row), int(column), RAW[annotated]))
            truth.append((annotated, predicted))
    rows.append((sorted(masks)[0], 0, 0, "shadow"))  # dropped by no taxonomy: refused below, then removed
    import_points(dataset.name, read_point_csv(coralnet_csv(rows)))
    with pytest.raises(UserError, match=r"1 label\(s\) taxonomy 'tinytax' does not know \('shadow'\)"):
        score(run_dir, dataset.name)

    import_points(dataset.name, read_point_csv(coralnet_csv(rows[:-1])))
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "evaluate" / "score_points.py"),
            "--run",
            str(run_dir),
            "--dataset",
            dataset.name,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"points scored: 36, point accuracy {(36 - wrong) / 36 * 100:.1f}%" in done.stdout
    out_dir = run_dir / "predict" / dataset.name
    per_class = {r["class"]: r for r in read_rows(out_dir / "point_scores.csv")}
    for index, name in enumerate(CLASSES):
        annotated = [p for a, p in truth if a == index]
        assert int(per_class[name]["points"]) == len(annotated)
        if annotated:
            assert float(per_class[name]["point_accuracy"]) == pytest.approx(
                np.mean([p == index for p in annotated]), abs=1e-4
            )
        assert float(per_class[name]["annotated_point_cover"]) == pytest.approx(len(annotated) / 36 * 100, abs=1e-3)
        predicted = sum(p == index for _, p in truth)
        assert float(per_class[name]["predicted_point_cover"]) == pytest.approx(predicted / 36 * 100, abs=1e-3)
    confusion = read_rows(out_dir / "point_confusion.csv")
    assert sum(int(r[n]) for r in confusion for n in CLASSES) == 36
    cover = read_rows(out_dir / "point_cover.csv")
    for name, mask in masks.items():
        dense = [float(r["dense_cover"]) for r in cover if r["image"] == name]
        assert dense == pytest.approx(image_cover(mask, 3), abs=1e-3)


def test_bad_points_and_missing_predictions(survey):  # noqa: F811
    import fiftyone as fo

    _, dataset, run_dir, _ = survey
    name = Path(dataset.first().filepath).name
    import_points(dataset.name, read_point_csv(coralnet_csv([(name, 1, 1, "acro"), (name, 2, 2, "Porites")])))
    with pytest.raises(UserError, match="has no prediction of run tiny-linear; run python evaluate/predict.py"):
        score(run_dir, dataset.name)
    predict(run_dir, dataset.name, tags=("new",))  # the sample with points is not among them
    with pytest.raises(UserError, match="none of the 1 samples with points has a prediction"):
        score(run_dir, dataset.name)
    predict(run_dir, dataset.name)
    sample = dataset.first()
    sample.gt_points.keypoints.append(fo.Keypoint(label="acro", points=[(1.2, 0.5)]))  # edited after the import
    sample.save()
    report, _ = score(run_dir, dataset.name)
    assert (report["points"], report["outside"]) == (2, 1)
    with pytest.raises(UserError, match="no point field 'corals'"):
        score(run_dir, dataset.name, field="corals")
