"""Exterior rings traced with array operations: GDAL's own (rasterio's `shapes`), point for point."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features

from evaluate.tracing import exterior_rings


def _as_lists(ids: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    rings = exterior_rings(ids)
    bounds = np.r_[0, np.cumsum(np.bincount(rings.ring_of, minlength=len(rings.regions)))]
    assert list(rings.regions) == sorted(set(np.unique(ids).tolist()) - {0})  # ascending ids, every one
    return {
        int(region): [(int(x), int(y)) for x, y in rings.points[bounds[k] : bounds[k + 1]]]
        for k, region in enumerate(rings.regions)
    }


def _gdal(ids: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    return {
        int(value): [(int(x), int(y)) for x, y in geometry["coordinates"][0]]
        for geometry, value in rasterio.features.shapes(ids, mask=ids > 0, connectivity=4)
    }


def _random_regions(rng: np.random.Generator) -> np.ndarray:
    """4-connected regions of blocks of classes with speckle: holes, holes in holes, pinches, regions at the edges."""
    import skimage.measure

    height, width = (int(v) for v in rng.integers(1, 50, 2))
    classes = int(rng.integers(1, 6))
    blocks = rng.integers(0, classes + 1, (height // int(rng.integers(1, 5)) + 1, width // 2 + 1))
    mask = np.kron(blocks, np.ones((5, 2), dtype=np.int64))[:height, :width]
    mask[rng.random(mask.shape) < rng.random() * 0.4] = rng.integers(0, classes + 1)
    labels = skimage.measure.label(mask, background=-1, connectivity=1).astype(np.int32)
    labels[mask == 0] = 0  # class 0 is no region: the holes
    return labels


def test_the_rings_are_gdals_point_for_point_on_random_regions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        ids = _random_regions(rng)
        assert _as_lists(ids) == _gdal(ids)


def test_a_region_touching_itself_at_a_corner_passes_through_it_and_leaves_the_hole_out() -> None:
    ids = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=np.int32)
    # the hole at row 1, column 1 meets the outside at the corner (2, 1), where the region touches itself
    rings = _as_lists(ids)
    assert rings == _gdal(ids)
    assert rings[1] == [(0, 0), (0, 3), (3, 3), (3, 1), (2, 1), (2, 0), (0, 0)]


def test_regions_of_one_pixel_and_at_every_edge_and_an_image_without_any() -> None:
    ids = np.array([[1, 0, 2], [0, 3, 0], [4, 0, 5]], dtype=np.int64)
    assert _as_lists(ids) == _gdal(ids.astype(np.int32))
    assert _as_lists(ids)[3] == [(1, 1), (1, 2), (2, 2), (2, 1), (1, 1)]
    empty = exterior_rings(np.zeros((4, 5), dtype=np.int32))
    assert empty.points.shape == (0, 2) and len(empty.ring_of) == len(empty.regions) == 0


def test_other_than_a_2d_integer_array_is_refused() -> None:
    with pytest.raises(ValueError, match="2-D array of integer"):
        exterior_rings(np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D array of integer"):
        exterior_rings(np.zeros((2, 3, 3), dtype=np.int32))
