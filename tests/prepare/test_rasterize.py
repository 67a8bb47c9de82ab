"""Rasterization rules, with exact pixel counts on hand-made polygons and an independent OpenCV check."""

import cv2
import numpy as np
from shapely.geometry import Polygon, box

from prepare.rasterize import Shape, draw_order, polygon_from_rings, rasterize_shapes, to_pixels


def test_square_on_pixel_corners_covers_exactly_its_pixels():
    mask = rasterize_shapes([Shape(box(1, 1, 4, 4), 3)], width=6, height=5)
    assert (mask == 3).sum() == 9
    assert (mask[1:4, 1:4] == 3).all()


def test_pixel_belongs_when_its_centre_is_inside():
    # Centres (c+0.5, r+0.5) satisfy x + y < 4.2 exactly when c + r <= 3: 10 pixels.
    mask = rasterize_shapes([Shape(Polygon([(0, 0), (4.2, 0), (0, 4.2)]), 1)], width=6, height=6)
    assert (mask == 1).sum() == 10
    assert mask[3, 0] == 1 and mask[0, 3] == 1 and mask[2, 2] == 0


def test_normalized_points_scale_by_width_and_height():
    ring = to_pixels([(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)], width=8, height=4)
    assert ring.tolist() == [[2, 1], [6, 1], [6, 3], [2, 3]]
    mask = rasterize_shapes([Shape(polygon_from_rings([ring]), 1)], width=8, height=4)
    assert (mask == 1).sum() == 8 and (mask[1:3, 2:6] == 1).all()


def test_self_intersecting_polygon_is_repaired_not_dropped():
    # A bowtie crossing at (2.5, 3): two triangles of 6 pixel centres each.
    geometry = polygon_from_rings([np.array([(0, 0), (5, 6), (5, 0), (0, 6)], dtype=float)])
    assert geometry is not None and geometry.is_valid
    mask = rasterize_shapes([Shape(geometry, 2)], width=6, height=6)
    assert (mask == 2).sum() == 12


def test_degenerate_polygons_have_no_area():
    assert polygon_from_rings([np.array([(0, 0), (3, 3)], dtype=float)]) is None
    assert polygon_from_rings([np.array([(0, 0), (1, 1), (2, 2), (0, 0)], dtype=float)]) is None
    assert polygon_from_rings([np.array([(1, 1), (1, 1), (1, 1)], dtype=float)]) is None


def test_several_rings_make_one_annotation():
    geometry = polygon_from_rings(
        [np.array([(0, 0), (2, 0), (2, 2), (0, 2)], float), np.array([(4, 4), (6, 4), (6, 6), (4, 6)], float)]
    )
    assert (rasterize_shapes([Shape(geometry, 1)], 8, 8) == 1).sum() == 8


def test_smaller_on_top_whatever_the_annotation_order():
    big, small = Shape(box(0, 0, 6, 6), 1), Shape(box(2, 2, 4, 4), 2)
    for order in ([big, small], [small, big]):
        mask = rasterize_shapes(order, 6, 6)
        assert (mask == 2).sum() == 4 and (mask == 1).sum() == 32


def test_z_order_beats_size():
    big, small = Shape(box(0, 0, 6, 6), 1, z_order=1), Shape(box(2, 2, 4, 4), 2, z_order=0)
    mask = rasterize_shapes([small, big], 6, 6)
    assert (mask == 1).sum() == 36


def test_no_shapes_gives_background():
    assert (rasterize_shapes([], 5, 4) == 0).all() and rasterize_shapes([], 5, 4).shape == (4, 5)


def _star(rng, cx, cy, radius, n=14):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.0, n)
    return np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]


def _opencv_fill(shapes, width, height, offset):
    """Fill with OpenCV in our draw order, points moved by `offset` pixels, with 8 bits of sub-pixel precision."""
    out = np.zeros((height, width), np.uint8)
    for shape in draw_order(shapes):
        ring = np.round((np.asarray(shape.geometry.exterior.coords) + offset) * 256).astype(np.int32)
        cv2.fillPoly(out, [ring], shape.value, lineType=cv2.LINE_8, shift=8)
    return out


def test_agrees_with_independent_opencv_fill_off_polygon_edges():
    """OpenCV puts integer coordinates on pixel centres, CVAT on corners: shift by half a pixel, draw in the same order."""
    rng = np.random.default_rng(7)
    width, height = 241, 173
    shapes = [
        Shape(
            polygon_from_rings([_star(rng, *rng.uniform(10, 230, 2) * (1, 0.7), rng.uniform(8, 50))]),
            value=i + 1,
            z_order=int(rng.integers(0, 2)),
        )
        for i in range(25)
    ]
    ours = rasterize_shapes(shapes, width, height)
    theirs = _opencv_fill(shapes, width, height, offset=-0.5)
    # Edge pixels: centre within one pixel of any polygon outline (OpenCV's own fill rule differs there).
    on_edge = rasterize_shapes([Shape(s.geometry.boundary.buffer(1.0), 1) for s in shapes], width, height) == 1
    assert (~on_edge).mean() > 0.75
    assert len(np.unique(ours)) > 10  # many overlapping classes, not a blank mask
    assert (ours[~on_edge] == theirs[~on_edge]).all()
    unshifted = _opencv_fill(shapes, width, height, offset=0.0)
    assert (ours[~on_edge] != unshifted[~on_edge]).sum() > 20  # the half-pixel shift matters even off the edges
