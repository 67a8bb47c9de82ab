"""An evaluated split's survey numbers: ground truth (from the masks and annotated colonies) beside prediction."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from evaluate_world import CLASSES, World, evaluate_world
from PIL import Image

from evaluate.colonies import find_colonies
from evaluate.ecology import image_cover
from evaluate.pipeline import evaluation_dir
from evaluate.survey_report import GROUND_TRUTH, PREDICTION, SPLIT_SURVEY_DIR, SPLIT_SURVEY_FILES
from prepare.layout import load_prepared
from prepare.mask_png import read_mask
from prepare.rasterize import polygon_from_rings, to_pixels


def read_rows(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="module")
def survey_dir(world: World):
    evaluate_world(world)
    return evaluation_dir(world.run_dir, world.dataset, "val") / SPLIT_SURVEY_DIR


def test_ground_truth_numbers_equal_those_of_the_masks_and_polygons(world: World, survey_dir) -> None:
    import fiftyone as fo

    assert all((survey_dir / name).is_file() for name in SPLIT_SURVEY_FILES)
    prepared = load_prepared(world.settings.data_root / "prepared" / f"{world.dataset}_tinytax")
    gt_masks = {e.sample_id: read_mask(prepared.mask_path(e)) for e in prepared.entries}
    dataset = fo.load_dataset(world.dataset)
    names = {s.id: s.filepath.rsplit("/", 1)[-1] for s in dataset}
    cover = read_rows(survey_dir / "cover.csv")
    for source, masks in ((GROUND_TRUTH, gt_masks), (PREDICTION, dict(zip(world.sample_ids, world.model_masks)))):
        for sample_id, mask in masks.items():
            expected = image_cover(mask, len(CLASSES))
            got = [float(r["cover"]) for r in cover if r["source"] == source and r["image"] == names[sample_id]]
            assert got == pytest.approx(expected, abs=1e-4), (source, names[sample_id])
    site_year = {(r["source"], r["class"]): r for r in read_rows(survey_dir / "site_year.csv")}
    colonies = read_rows(survey_dir / "colonies.csv")
    for index, name in enumerate(CLASSES[1:], start=1):
        gt_row = site_year[(GROUND_TRUTH, name)]
        assert (gt_row["site"], gt_row["year"], gt_row["quadrats"]) == ("Reef", "2024", "3")
        direct = np.mean([image_cover(m, len(CLASSES))[index] for m in gt_masks.values()])
        assert float(gt_row["mean_cover"]) == pytest.approx(direct, abs=1e-4)
        # ground-truth colonies are the annotated polygons ("acro" relabelled Acropora), sizes on a 1 m x 1 m quadrat
        drawn = []
        for sample in dataset:
            height, width = gt_masks[sample.id].shape
            for polyline in sample.gt_polylines.polylines:
                if {"acro": "Acropora"}.get(polyline.label, polyline.label) == name:
                    area = polygon_from_rings([to_pixels(r, width, height) for r in polyline.points]).area
                    drawn.append(area * (100 / width) * (100 / height))
        gt_areas = [float(r["area_cm2"]) for r in colonies if r["source"] == GROUND_TRUTH and r["class"] == name]
        assert sorted(gt_areas) == pytest.approx(sorted(drawn), rel=1e-3) and int(gt_row["colonies"]) == len(drawn)
        assert float(gt_row["density_per_m2"]) == pytest.approx(len(drawn) / 3, abs=1e-4)
        predicted = sum(
            sum(c.class_index == index for c in find_colonies(m, np.ones(m.shape, np.float32)))
            for m in world.model_masks
        )
        assert int(site_year[(PREDICTION, name)]["colonies"]) == predicted


def test_side_by_side_table_report_section_and_plot(world: World, survey_dir) -> None:
    site_year = {(r["source"], r["class"]): r for r in read_rows(survey_dir / "site_year.csv")}
    pairs = read_rows(survey_dir / "site_year_side_by_side.csv")
    assert [r["class"] for r in pairs] == [*CLASSES, "all coral"]
    for row in pairs:
        gt, predicted = site_year[(GROUND_TRUTH, row["class"])], site_year[(PREDICTION, row["class"])]
        assert row["gt_mean_cover"] == gt["mean_cover"] and row["predicted_mean_cover"] == predicted["mean_cover"]
        assert float(row["cover_error"]) == pytest.approx(
            float(predicted["mean_cover"]) - float(gt["mean_cover"]), abs=1e-3
        )
        assert (row["gt_colonies"], row["predicted_colonies"]) == (gt["colonies"], predicted["colonies"])
    dropped = CLASSES[world.dropped[1]]
    row = next(r for r in pairs if r["class"] == dropped)
    assert float(row["cover_error"]) > 0  # the colony deleted from the ground truth is predicted
    report = (survey_dir.parent / "report.md").read_text()
    assert "## Survey numbers: ground truth beside prediction" in report
    assert f"| Reef | 2024 | {dropped} | 3 | {float(row['gt_mean_cover']):.2f} (" in report
    assert "](survey/ground_truth_vs_prediction.png)" in report
    plot = np.asarray(Image.open(survey_dir / "ground_truth_vs_prediction.png").convert("RGB"))
    assert plot.shape[0] > 200 and (plot == (60, 180, 75)).all(axis=-1).sum() > 50  # Acropora's bars in its colour
