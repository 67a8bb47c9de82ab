"""Report files: their numbers come from the accumulated matrix, and no-GT splits say nothing was scored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.reports import REPORT_FILES, ColonyCounts, ImageResult, SplitReport, format_per_class_table, write_report
from models.metrics import confusion_matrix, cover_percent

NAMES = ["background", "acropora", "porites"]
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]


def _report(with_gt: bool = True) -> SplitReport:
    gt_a = np.array([[0, 1, 1, 255], [2, 2, 2, 255]])
    pred_a = np.array([[0, 1, 1, 0], [2, 2, 0, 0]])
    gt_b = np.array([[1, 1], [1, 1]])
    pred_b = np.array([[1, 1], [1, 2]])
    images = [
        ImageResult("a.jpg", "id_a", cover_percent(pred_a, 3), confusion_matrix(gt_a, pred_a, 3) if with_gt else None),
        ImageResult("b.jpg", "id_b", cover_percent(pred_b, 3), confusion_matrix(gt_b, pred_b, 3) if with_gt else None),
    ]
    colonies = (
        {"acropora": ColonyCounts(tp=2, fp=1, fn=1), "porites": ColonyCounts(tp=0, fp=0, fn=2)} if with_gt else None
    )
    return SplitReport("run1", "val", NAMES, PALETTE, 0, images, colonies, {"window": 448, "window_stride": 298})


def test_report_files_hold_the_split_numbers(tmp_path: Path) -> None:
    written = write_report(_report(), tmp_path)
    assert sorted(p.name for p in written) == sorted(REPORT_FILES)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # matrix over both images: bg [1,0,0], acropora [0,5,1], porites [1,0,2]
    assert metrics["summary"]["miou"] == pytest.approx((5 / 6 + 2 / 4) / 2, abs=1e-6)
    assert metrics["summary"]["pixel_accuracy"] == pytest.approx(8 / 10, abs=1e-6)
    assert metrics["colonies"] == {
        "tp": 2,
        "fp": 1,
        "fn": 3,
        "recall": 0.4,
        "precision": pytest.approx(2 / 3, abs=1e-6),
    }
    per_class = list(csv.DictReader((tmp_path / "per_class.csv").open()))
    assert [r["class"] for r in per_class] == NAMES
    assert float(per_class[1]["iou"]) == pytest.approx(5 / 6, abs=1e-6)
    assert float(per_class[1]["colony_recall"]) == pytest.approx(2 / 3, abs=1e-6)
    assert per_class[2]["colony_precision"] == ""  # no porites colony predicted: undefined, not 0
    # image a: GT cover porites 50 %, predicted 33.3 %; image b: 0 vs 25 % -> MAE 14.58, bias +4.17
    assert float(per_class[2]["cover_mae"]) == pytest.approx((50 / 3 + 25) / 2, abs=1e-4)
    assert float(per_class[2]["cover_bias"]) == pytest.approx((-50 / 3 + 25) / 2, abs=1e-4)
    confusion = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    assert confusion[3] == ["porites", "1", "0", "2"]
    cover = list(csv.DictReader((tmp_path / "cover.csv").open()))
    assert len(cover) == 6 and float(cover[2]["error"]) == pytest.approx(-50 / 3, abs=1e-4)
    per_image = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert float(per_image[1]["iou_acropora"]) == pytest.approx(3 / 4, abs=1e-6)
    assert Image.open(tmp_path / "confusion_matrix.png").size[0] > 300
    assert "![IoU per class](iou_per_class.png)" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob("*.part*"))


def test_split_without_gt_scores_nothing_and_clears_old_scores(tmp_path: Path) -> None:
    write_report(_report(), tmp_path)
    write_report(_report(with_gt=False), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scored_images"] == 0 and metrics["summary"] is None
    assert not (tmp_path / "per_class.csv").exists() and not (tmp_path / "confusion_matrix.png").exists()
    assert "nothing was scored" in format_per_class_table(_report(with_gt=False))
    assert "nothing was scored" in (tmp_path / "report.md").read_text()


def test_printed_table_lists_every_class() -> None:
    table = format_per_class_table(_report())
    assert all(name in table for name in NAMES)
    assert "83.33" in table and "mIoU (coral) 66.67" in table


def test_coarser_level_and_site_year_breakdown(tmp_path: Path) -> None:
    from evaluate.reports import group_rows, report_at_level

    report = _report()
    report.images[0].site, report.images[0].year = "Reef", 2020
    report.images[1].site = "Lagoon"
    report.taxonomy = "three"
    coral = report_at_level(report, [0, 1, 1], "coral_only", ["background", "coral"], [[0, 0, 0], [9, 9, 9]])
    assert np.array_equal(coral.matrix, [[1, 0], [1, 8]])  # acropora and porites confused with each other count
    assert coral.images[1].predicted_cover.tolist() == [0.0, 100.0]
    report.levels = [coral]
    coral.compared = [{"run": "run_coral", "miou": 0.5, "pixel_accuracy": 0.75, "scored_images": 2}]
    sites = group_rows(report, "site")
    assert [(r["group"], r["images"]) for r in sites] == [("Lagoon", 1), ("Reef", 1)]
    # image a: GT coral on 5 of its 6 counted pixels, predicted on 4; image b: 100 vs 100
    assert sites[1]["gt_coral_cover"] == pytest.approx(500 / 6, abs=1e-4)
    assert sites[1]["predicted_coral_cover"] == pytest.approx(400 / 6, abs=1e-4)
    assert sites[1]["coral_cover_mae"] == pytest.approx(100 / 6, abs=1e-4)
    assert sites[0]["miou"] == pytest.approx((3 / 4 + 0) / 2, abs=1e-6) and sites[0]["coral_cover_mae"] == 0
    assert [(r["group"], r["images"]) for r in group_rows(report, "year")] == [(2020, 1), (None, 1)]
    write_report(report, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    level = metrics["levels"][0]
    assert level["taxonomy"] == "coral_only" and level["summary"]["miou"] == pytest.approx(8 / 9, abs=1e-6)
    assert "colony_tp" not in level["per_class"][0] and level["runs_trained_at_this_level"][0]["run"] == "run_coral"
    assert metrics["by_year"][1]["group"] is None
    text = (tmp_path / "report.md").read_text()
    assert "### `coral_only` (1 class)" in text and "run_coral" in text and "(unknown)" in text


def test_runs_trained_at_a_level_are_found_beside_the_run(tmp_path: Path) -> None:
    from evaluate.pipeline import evaluation_dir, runs_evaluated_at

    def evaluated(name: str, taxonomy: str, dataset: str = "reef", split: str = "val") -> None:
        folder = evaluation_dir(tmp_path / name, dataset, split)
        folder.mkdir(parents=True)
        metrics = {"taxonomy": taxonomy, "scored_images": 3, "summary": {"miou": 0.4, "pixel_accuracy": 0.9}}
        (folder / "metrics.json").write_text(json.dumps(metrics))

    evaluated("fine", "finegrained")
    evaluated("ext_a", "extended")
    evaluated("ext_other_split", "extended", split="test")
    evaluated("ext_other_dataset", "extended", dataset="lagoon")
    older = evaluation_dir(tmp_path / "ext_older", "reef", "val")  # a metrics.json from before it named the taxonomy
    older.mkdir(parents=True)
    (older / "metrics.json").write_text(json.dumps({"classes": ["background", "A"], "summary": {"miou": 0.3}}))
    (tmp_path / "broken" / "eval" / "reef" / "val").mkdir(parents=True)
    (tmp_path / "broken" / "eval" / "reef" / "val" / "metrics.json").write_text("{not json")
    found = runs_evaluated_at(tmp_path, "extended", "reef", "val", tmp_path / "fine", ["background", "A"])
    assert found == [
        {"run": "ext_a", "miou": 0.4, "pixel_accuracy": 0.9, "scored_images": 3},
        {"run": "ext_older", "miou": 0.3, "pixel_accuracy": None, "scored_images": None},
    ]
    assert runs_evaluated_at(tmp_path, "finegrained", "reef", "val", tmp_path / "fine") == []
