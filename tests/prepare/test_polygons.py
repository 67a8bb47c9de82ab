"""Masks back to polygons: one per connected region, holes kept, round trip through rasterize."""

import numpy as np
import pytest
from shapely.geometry import Point, box

from prepare.polygons import (
    mask_to_polygons,
    polygon_to_cvat_points,
    polygon_to_fiftyone_points,
    polygons_to_fiftyone_points,
)
from prepare.rasterize import Shape, rasterize_shapes


def _scene(width=320, height=240):
    donut = Point(100, 100).buffer(60).difference(Point(100, 100).buffer(25))
    shapes = [
        Shape(donut, 1),
        Shape(Point(250, 80).buffer(40, quad_segs=3), 2),
        Shape(box(200, 150, 300, 220), 2),  # second region of class 2
        Shape(Point(60, 200).buffer(30).union(box(50, 160, 140, 175)), 3),
        Shape(box(10, 10, 12, 11), 3),  # 2 pixels: dropped as noise
    ]
    return rasterize_shapes(shapes, width, height)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_exact_without_simplification():
    mask = _scene()
    found = mask_to_polygons(mask, tolerance=0, min_area=0)
    redrawn = rasterize_shapes([Shape(p, v) for v, p in found], mask.shape[1], mask.shape[0])
    assert (redrawn == mask).all()


@pytest.mark.parametrize("tolerance", [0.5, 1.0])
def test_round_trip_iou_per_class(tolerance):
    mask = _scene()
    found = mask_to_polygons(mask, tolerance=tolerance, min_area=16)
    redrawn = rasterize_shapes([Shape(p, v) for v, p in found], mask.shape[1], mask.shape[0])
    for value in (1, 2, 3):
        truth = mask == value
        truth[10:11, 10:12] = False if value == 3 else truth[10:11, 10:12]
        assert _iou(truth, redrawn == value) >= 0.99


def test_one_polygon_per_region_holes_kept_noise_dropped():
    found = mask_to_polygons(_scene(), tolerance=1.0, min_area=16)
    per_class = {v: [p for c, p in found if c == v] for v in (1, 2, 3)}
    assert [len(per_class[v]) for v in (1, 2, 3)] == [1, 2, 1]
    (donut,) = per_class[1]
    assert len(donut.interiors) == 1
    assert all(p.is_valid for _, p in found)
    assert all(p.area >= 16 for _, p in found)


def test_background_and_ignore_make_no_polygons():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    assert mask_to_polygons(mask) == []


def test_fiftyone_and_cvat_points():
    polygon = box(10, 20, 50, 60).difference(box(20, 30, 30, 40))
    rings = polygon_to_fiftyone_points(polygon, width=100, height=200)
    assert len(rings) == 2
    assert all(0 <= x <= 1 and 0 <= y <= 1 for ring in rings for x, y in ring)
    assert sorted(rings[0]) == sorted([[0.1, 0.1], [0.5, 0.1], [0.5, 0.3], [0.1, 0.3]])
    plain, holed = box(0, 0, 7, 9), box(1, 2, 90, 150).difference(box(3, 4, 5, 6)).difference(box(60, 70, 80, 90))
    assert polygons_to_fiftyone_points([polygon, plain, holed], width=100, height=200) == [
        [[[x / 100, y / 200] for x, y in list(ring.coords)[:-1]] for ring in (p.exterior, *p.interiors)]
        for p in (polygon, plain, holed)
    ]  # rings of each polygon, exterior first, in order
    flat = polygon_to_cvat_points(polygon)
    assert len(flat) == 8 and sorted(zip(flat[::2], flat[1::2])) == [(10, 20), (10, 60), (50, 20), (50, 60)]


def test_simplification_keeps_iou_and_cuts_vertices():
    mask = rasterize_shapes([Shape(Point(150.3, 150.7).buffer(100), 1)], 300, 300)
    ((value, polygon),) = mask_to_polygons(mask, tolerance=1.0)
    staircase = len(mask_to_polygons(mask, tolerance=0)[0][1].exterior.coords)
    redrawn = rasterize_shapes([Shape(polygon, value)], 300, 300)
    assert _iou(mask == 1, redrawn == 1) >= 0.99
    assert len(polygon.exterior.coords) < staircase / 10


def test_a_rectangle_stays_a_rectangle():
    mask = rasterize_shapes([Shape(box(10, 10, 60, 40), 4)], 100, 100)
    ((value, polygon),) = mask_to_polygons(mask)
    assert value == 4 and polygon.equals(box(10, 10, 60, 40))
