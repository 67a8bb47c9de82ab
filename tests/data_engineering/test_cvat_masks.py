"""CVAT mask shapes: RLE decoded exactly as CVAT encodes it, and rings that rasterize back to the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask

from data_engineering.cvat_masks import MaskError, decode_rle, mask_rings
from data_engineering.shapes import EMPTY_MASK, INVALID_MASK, CvatShape, shapes_to_polygons
from prepare.rasterize import Shape, polygon_from_rings, rasterize_shapes, to_pixels


def _bitmaps() -> dict[str, np.ndarray]:
    """Masks an annotator's brush makes: at the image's corners and borders, with holes, islands in holes, diagonal pixels."""
    height, width = 24, 32
    found = {}
    full = np.ones((height, width), dtype=bool)
    found["whole image"] = full
    corner = np.zeros((height, width), dtype=bool)
    corner[:5, :7] = True
    found["top-left corner"] = corner
    bottom_right = np.zeros((height, width), dtype=bool)
    bottom_right[15:, 20:] = True
    bottom_right[18:21, 24:27] = False  # a hole
    found["bottom-right border with a hole"] = bottom_right
    ring = np.zeros((height, width), dtype=bool)
    ring[2:20, 3:25] = True
    ring[5:17, 6:22] = False
    ring[8:14, 10:18] = True  # an island inside the hole
    ring[10:12, 13:15] = False  # and a hole in the island
    found["nested holes and island"] = ring
    diagonal = np.zeros((height, width), dtype=bool)
    diagonal[np.arange(10), np.arange(10) + 3] = True  # pixels touching only at corners
    diagonal[0, 31] = diagonal[23, 0] = True  # single pixels in the other corners
    found["diagonal pixels and single corners"] = diagonal
    rng = np.random.default_rng(7)
    found["random blobs"] = rng.random((height, width)) > 0.55
    return found


@pytest.mark.parametrize("name", list(_bitmaps()))
def test_decode_matches_cvat_sdk_for_masks_encoded_as_cvat_does(name: str):
    bitmap = _bitmaps()[name]
    points = encode_mask(bitmap)  # cvat-sdk's encoder: what CVAT's server and auto-annotation store
    box, left, top = decode_rle(points)
    full = np.zeros_like(bitmap)
    full[top : top + box.shape[0], left : left + box.shape[1]] = box
    assert (full == bitmap).all()
    assert (full == decode_mask(points, image_width=bitmap.shape[1], image_height=bitmap.shape[0])).all()


def test_runs_start_with_zeros_and_the_box_is_inclusive():
    box, left, top = decode_rle([0, 2, 1, 1, 5, 7, 6, 8])  # a 2x2 box at (5, 7): set, set / unset, set
    assert (left, top) == (5, 7) and box.tolist() == [[True, True], [False, True]]
    box, _, _ = decode_rle([1, 3, 0, 0, 1, 1])
    assert box.tolist() == [[False, True], [True, True]]
    for bad in ([1, 2, 0, 0, 1, 1], [4, 0, 0, 1], [2, 2, 3, 3, 2, 2], [0.5, 3.5, 0, 0, 1, 1], [-1, 5, 0, 0, 1, 1]):
        with pytest.raises(MaskError):
            decode_rle(bad)


def _rasterized_back(shape: CvatShape, width: int, height: int) -> np.ndarray:
    """The pull's polygon record as prepare draws it: FiftyOne rings -> pixels -> mask."""
    [record], skipped = shapes_to_polygons([shape], width, height)
    assert not skipped
    rings = [np.asarray(ring) for ring in (record.points, *record.other_rings)]
    geometry = polygon_from_rings([to_pixels(ring, width, height) for ring in rings])
    return rasterize_shapes([Shape(geometry, 1)], width, height) == 1


@pytest.mark.parametrize("name", list(_bitmaps()))
def test_a_mask_round_trips_through_the_pull_and_prepare_pixel_for_pixel(name: str):
    bitmap = _bitmaps()[name]
    shape = CvatShape(
        type="mask",
        label="Acropora",
        points=encode_mask(bitmap),
        z_order=3,
        attributes={"confidence": "90"},
        shape_id=4,
    )
    drawn = _rasterized_back(shape, bitmap.shape[1], bitmap.shape[0])
    assert (drawn == bitmap).all(), f"{(drawn != bitmap).sum()} pixels differ"


def test_holes_are_rings_of_their_own():
    bitmap = _bitmaps()["bottom-right border with a hole"]
    [record], _ = shapes_to_polygons([CvatShape(type="mask", label="Porites", points=encode_mask(bitmap))], 32, 24)
    assert len(record.other_rings) == 1 and not record.clipped
    xs, ys = zip(*record.points)
    assert (min(xs), max(xs), min(ys), max(ys)) == (
        20 / 32,
        1.0,
        15 / 24,
        1.0,
    )  # on the image's right and bottom border
    hole_xs, hole_ys = zip(*record.other_rings[0])
    assert (min(hole_xs), max(hole_xs), min(hole_ys), max(hole_ys)) == (24 / 32, 27 / 32, 18 / 24, 21 / 24)


def test_empty_invalid_and_out_of_image_masks():
    empty = encode_mask(np.zeros((4, 4), dtype=bool), bbox=[0, 0, 2, 2])
    polygons, skipped = shapes_to_polygons(
        [CvatShape(type="mask", label="A", points=empty), CvatShape(type="mask", label="A", points=[2, 1, 0, 0, 1, 1])],
        4,
        4,
    )
    assert not polygons and skipped == {EMPTY_MASK: 1, INVALID_MASK: 1}
    box = np.ones((3, 3), dtype=bool)
    rings, clipped = mask_rings(box, 2, 2, 4, 4)  # a box reaching past a 4x4 image keeps its inside part
    assert clipped and len(rings) == 1 and sorted(rings[0]) == [(2.0, 2.0), (2.0, 4.0), (4.0, 2.0), (4.0, 4.0)]
