"""Dense predictions scored at annotated points; points sampled from predictions."""

from __future__ import annotations

import numpy as np
import pytest

from common.cli import UserError
from data_engineering.coralnet_points import PointAnnotation
from evaluate.points import sample_points, score_points


def test_score_points_against_a_mask():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:, 5:] = 1
    mask[9, 9] = 255
    points = [
        PointAnnotation("a", 0, 0, "bg"),
        PointAnnotation("a", 0, 6, "acro"),
        PointAnnotation("a", 5, 1, "acro"),
        PointAnnotation("a", 9, 9, "acro"),
    ]
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
