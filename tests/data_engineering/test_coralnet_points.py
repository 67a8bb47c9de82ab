"""CoralNet-style points: its CSV shape read and checked, written back, imported as FiftyOne keypoints."""

from __future__ import annotations

import subprocess
import sys

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from common.settings import REPO_ROOT
from data_engineering.coralnet_points import (
    PointAnnotation,
    check_points,
    import_points,
    keypoint_xy,
    point_from_keypoint,
    read_point_csv,
    write_point_csv,
)

# The shape of a CoralNet annotation export: extra metadata columns, a BOM, 0-based rows and columns.
CORALNET_CSV = (
    "\ufeffName,Date,Aux1,Aux2,Row,Column,Label,Label code\n"
    "MooreaE2B_2020_05.jpg,2020-05-01,Moorea,E2B,10,20,Acropora,Acro\n"
    "MooreaE2B_2020_05.jpg,2020-05-01,Moorea,E2B,0,0,Porites,Por\n"
    "\n"
    "MooreaE2B_2021_05.jpg,2021-05-01,Moorea,E2B,29,39,Sand,Sand\n"
)


def test_reads_a_coralnet_export():
    assert read_point_csv(CORALNET_CSV) == [
        PointAnnotation("MooreaE2B_2020_05.jpg", 10, 20, "Acropora"),
        PointAnnotation("MooreaE2B_2020_05.jpg", 0, 0, "Porites"),
        PointAnnotation("MooreaE2B_2021_05.jpg", 29, 39, "Sand"),
    ]


def test_malformed_csvs_are_named():
    with pytest.raises(UserError, match="empty"):
        read_point_csv("")
    with pytest.raises(UserError, match="no row column"):
        read_point_csv("Name,Column,Label\na.jpg,1,x\n")
    with pytest.raises(UserError, match=r"2 row\(s\).*line 2, 4"):
        read_point_csv("Name,Row,Column,Label\na.jpg,1.5,1,x\na.jpg,1,1,x\na.jpg,nan,1,x\n")


def test_check_points_lists_unknown_images_and_outside_points():
    sizes = {"a.jpg": (100, 200)}
    check_points([PointAnnotation("a.jpg", 99, 199, "Acropora")], sizes)
    bad = [
        PointAnnotation("b.jpg", 1, 1, "Acropora"),
        PointAnnotation("a.jpg", 100, 5, "Turf"),
        PointAnnotation("a.jpg", 5, -1, "Acropora"),
    ]
    with pytest.raises(UserError) as error:
        check_points(bad, sizes)
    assert "1 image(s) not in the dataset (b.jpg)" in str(error.value) and "2 point(s) outside" in str(error.value)


def test_write_then_read_and_keypoint_round_trips():
    points = [PointAnnotation("x, y.jpg", 3, 4, "Acropora"), PointAnnotation("z.jpg", 0, 0, "Sand")]
    assert read_point_csv(write_point_csv(points)) == points
    for row, column in [(0, 0), (29, 39), (7, 13)]:
        x, y = keypoint_xy(PointAnnotation("a", row, column, "l"), 30, 40)
        assert point_from_keypoint("a", "l", x, y, 30, 40) == PointAnnotation("a", row, column, "l")


@pytest.fixture
def photos_dataset(tmp_path, dataset_name):
    samples = []
    for name in ("MooreaE2B_2020_05.jpg", "MooreaE2B_2021_05.jpg", "Other_2021_01.jpg"):
        path = tmp_path / name
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
        samples.append(fo.Sample(filepath=str(path), metadata=fo.ImageMetadata(width=40, height=30)))
    dataset = fo.Dataset(dataset_name)
    dataset.add_samples(samples)
    return dataset


def test_import_as_keypoints_and_rerun(photos_dataset, tmp_path):
    counts = import_points(photos_dataset.name, read_point_csv(CORALNET_CSV))
    assert counts == {"Acropora": 1, "Porites": 1, "Sand": 1}
    photos_dataset.reload()
    by_name = {s.filepath.rsplit("/", 1)[-1]: s for s in photos_dataset}
    first = by_name["MooreaE2B_2020_05.jpg"].gt_points.keypoints
    assert [k.label for k in first] == ["Acropora", "Porites"]
    assert first[0].points[0] == pytest.approx([20.5 / 40, 10.5 / 30])
    assert by_name["Other_2021_01.jpg"].gt_points is None
    import_points(photos_dataset.name, read_point_csv(CORALNET_CSV))  # a rerun replaces, never doubles
    assert len(photos_dataset.first().gt_points.keypoints) == 2
    with pytest.raises(UserError, match="outside"):
        import_points(photos_dataset.name, [PointAnnotation("MooreaE2B_2020_05.jpg", 30, 0, "Acropora")])


def test_command_line_refuses_unknown_images(photos_dataset, tmp_path):
    csv_file = tmp_path / "points.csv"
    csv_file.write_text(CORALNET_CSV + "Missing_2020_01.jpg,,,,1,1,Acropora,Acro\n")
    script = REPO_ROOT / "data_engineering" / "import_points.py"
    done = subprocess.run(
        [sys.executable, str(script), str(csv_file), "--dataset-name", photos_dataset.name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Missing_2020_01.jpg" in done.stderr and "Traceback" not in done.stderr
    photos_dataset.reload()
    assert not photos_dataset.has_sample_field("gt_points")  # refused before anything was written
    csv_file.write_text(CORALNET_CSV)
    done = subprocess.run(
        [sys.executable, str(script), str(csv_file), "--dataset-name", photos_dataset.name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "3 points on 2 images" in done.stdout
