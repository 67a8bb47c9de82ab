"""CoralNet-style points: reading its CSV shape, checks, scoring masks at points, sampling, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from common.cli import UserError
from evaluate.points import PointAnnotation, check_points, read_point_csv, sample_points, score_points, write_point_csv

# The shape of a CoralNet annotation export: extra metadata columns, a BOM, 0-based rows and columns.
CORALNET_CSV = (
    "\ufeffName,Date,Aux1,Aux2,Row,Column,Label,Label code\n"
    "MooreaE2B_2020_05.jpg,2020-05-01,Moorea,E2B,10,20,Acropora,Acro\n"
    "MooreaE2B_2020_05.jpg,2020-05-01,Moorea,E2B,0,0,Porites,Por\n"
    "\n"
    "MooreaE2B_2021_05.jpg,2021-05-01,Moorea,E2B,1919,1919,Sand,Sand\n"
)


def test_reads_a_coralnet_export():
    points = read_point_csv(CORALNET_CSV)
    assert points == [
        PointAnnotation("MooreaE2B_2020_05.jpg", 10, 20, "Acropora"),
        PointAnnotation("MooreaE2B_2020_05.jpg", 0, 0, "Porites"),
        PointAnnotation("MooreaE2B_2021_05.jpg", 1919, 1919, "Sand"),
    ]


def test_malformed_csvs_are_named():
    with pytest.raises(UserError, match="empty"):
        read_point_csv("")
    with pytest.raises(UserError, match="no row column"):
        read_point_csv("Name,Column,Label\na.jpg,1,x\n")
    with pytest.raises(UserError, match=r"2 row\(s\).*line 2, 4"):
        read_point_csv("Name,Row,Column,Label\na.jpg,1.5,1,x\na.jpg,1,1,x\na.jpg,nan,1,x\n")


def test_check_points_lists_unknown_images_labels_and_outside_points():
    sizes = {"a.jpg": (100, 200)}
    good = [PointAnnotation("a.jpg", 99, 199, "Acropora")]
    check_points(good, sizes, ["Acropora"])
    bad = good + [PointAnnotation("b.jpg", 1, 1, "Acropora"), PointAnnotation("a.jpg", 100, 5, "Turf"),
                  PointAnnotation("a.jpg", 5, -1, "Acropora")]
    with pytest.raises(UserError) as error:
        check_points(bad, sizes, ["Acropora"])
    message = str(error.value)
    assert "1 image(s) not in the dataset (b.jpg)" in message and "(Turf)" in message and "2 point(s) outside" in message


def test_score_points_against_a_mask():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:, 5:] = 1
    mask[9, 9] = 255
    points = [PointAnnotation("a", 0, 0, "bg"), PointAnnotation("a", 0, 6, "acro"), PointAnnotation("a", 5, 1, "acro"),
              PointAnnotation("a", 9, 9, "acro")]
    scores = score_points([(mask, points)], {"bg": 0, "acro": 1}, ["bg", "acro"])
    assert scores.confusion.tolist() == [[1, 0], [1, 1]]  # the ignored pixel is not counted
    assert scores.accuracy == pytest.approx(2 / 3)
    assert scores.per_class_accuracy.tolist() == pytest.approx([1.0, 0.5])
    assert scores.annotated_cover.tolist() == pytest.approx([100 / 3, 200 / 3])
    assert scores.predicted_point_cover.tolist() == pytest.approx([200 / 3, 100 / 3])


def test_stratified_points_fill_every_cell():
    points = sample_points((100, 100), 25, "stratified", seed=4)
    cells = {(int(r) // 20, int(c) // 20) for r, c in points}
    assert len(points) == 25 and cells == {(i, j) for i in range(5) for j in range(5)}
    odd = sample_points((30, 70), 7, "stratified", seed=1)
    assert len(odd) == 7 and odd[:, 0].max() < 30 and odd[:, 1].max() < 70
    random = sample_points((30, 70), 500, "random", seed=2)
    assert random.min() >= 0 and random[:, 0].max() < 30 and random[:, 1].max() < 70
    assert np.array_equal(random, sample_points((30, 70), 500, "random", seed=2))
    with pytest.raises(UserError):
        sample_points((10, 10), 0)
    with pytest.raises(UserError):
        sample_points((10, 10), 5, "grid")


def test_write_then_read_round_trip():
    points = [PointAnnotation("x, y.jpg", 3, 4, "Acropora"), PointAnnotation("z.jpg", 0, 0, "Sand")]
    assert read_point_csv(write_point_csv(points)) == points
