"""Colonies: one outline per connected region of a class, its confidence the mean over its own pixels."""

from __future__ import annotations

import numpy as np

from evaluate.colonies import find_colonies


def test_one_colony_per_region_with_its_own_confidence() -> None:
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:15, 5:25] = 1  # a colony of class 1 with a hole of background
    mask[8:12, 10:14] = 0
    mask[20:35, 30:45] = 2
    mask[20:30, 2:12] = 2  # a second, separate class-2 colony
    mask[0:2, 0:2] = 1  # 4 pixels: noise, dropped
    confidence = np.full(mask.shape, 0.5, dtype=np.float32)
    confidence[5:15, 5:25] = 0.9
    confidence[20:35, 30:45] = np.linspace(0.2, 0.8, 15)[None, :]
    colonies = sorted(find_colonies(mask, confidence), key=lambda c: (c.class_index, c.polygon.bounds))
    assert [(c.class_index, c.area) for c in colonies] == [(1, 184.0), (2, 100.0), (2, 225.0)]
    assert colonies[0].polygon.area == 200.0  # the outline fills the hole, as an annotator's polygon would
    assert colonies[0].confidence == np.float32(0.9)
    assert colonies[1].confidence == 0.5
    assert abs(colonies[2].confidence - 0.5) < 1e-6  # mean of the ramp over its own pixels only
    assert colonies[2].polygon.bounds == (30.0, 20.0, 45.0, 35.0)
    assert colonies[0].box == (5, 5, 25, 15) and colonies[0].pixels.shape == (10, 20)
    assert (
        colonies[0].pixels.sum() == 184 and not colonies[0].pixels[3:7, 5:9].any()
    )  # its own pixels: the hole stays out


def _simplified(exact, tolerance):
    """The rule, one outline at a time: Douglas-Peucker on the closed line; topology-preserving if that crosses."""
    from shapely.geometry import LineString, Polygon

    line = LineString(exact.exterior.coords).simplify(tolerance, preserve_topology=False)
    if len(line.coords) >= 4 and Polygon(line.coords).is_valid:
        return Polygon(line.coords)
    return Polygon(exact.exterior).simplify(tolerance, preserve_topology=True)


def _reference_colonies(mask, confidence, tolerance=1.0, min_area=16.0):
    """The former implementation (one polygon at a time, located by a representative point), kept as the oracle."""
    import cv2

    from prepare.polygons import mask_to_polygons

    found = []
    for class_index, exact in mask_to_polygons(mask, tolerance=0, min_area=min_area):
        _, labels = cv2.connectedComponents((mask == class_index).astype(np.uint8), connectivity=4)
        point = exact.representative_point()
        region = labels[int(point.y), int(point.x)] == labels
        outline = _simplified(exact, tolerance)
        found.append(
            (class_index, outline, float(confidence[region].astype(np.float64).mean()), float(exact.area), region)
        )
    return found


def test_the_same_colonies_as_the_former_tracing() -> None:
    rng = np.random.default_rng(3)
    for trial in range(4):
        blocks = rng.integers(0, 5, (14, 17), dtype=np.uint8)
        mask = np.kron(blocks, np.ones((9, 7), dtype=np.uint8))[:120, :115].copy()
        mask[rng.random(mask.shape) < 0.02] = 255 if trial % 2 else 3  # speckle: tiny regions and ignored pixels
        confidence = rng.random(mask.shape, dtype=np.float32)
        new = sorted(find_colonies(mask, confidence), key=lambda c: (c.class_index, c.polygon.bounds, c.area))
        old = sorted(_reference_colonies(mask, confidence), key=lambda c: (c[0], c[1].bounds, c[3]))
        assert len(new) == len(old) > 10
        for colony, (class_index, outline, mean, area, region) in zip(new, old):
            assert colony.class_index == class_index and colony.area == area
            assert colony.polygon.equals_exact(outline, 1e-9)
            assert abs(colony.confidence - mean) < 1e-9
            left, top, right, bottom = colony.box
            assert region.sum() == colony.pixels.sum() and region[top:bottom, left:right][colony.pixels].all()


CROSSING = """
...#
...#
..##
.##.
.##.
###.
###.
###.
###.
.#..
"""  # a fragment of a poor prediction: Douglas-Peucker at 1 px makes its outline cross itself


def test_an_outline_douglas_peucker_would_cross_is_simplified_keeping_its_topology() -> None:
    from shapely.geometry import LineString, Polygon

    from prepare.polygons import mask_to_polygons

    rows = CROSSING.split()
    mask = np.zeros((len(rows) + 4, len(rows[0]) + 4), dtype=np.uint8)
    mask[2:-2, 2:-2] = [[c == "#" for c in row] for row in rows]
    ((_, exact),) = mask_to_polygons(mask, tolerance=0, min_area=16)
    line = LineString(exact.exterior.coords).simplify(1.0, preserve_topology=False)
    assert not Polygon(line.coords).is_valid  # the case this test is about
    (colony,) = find_colonies(mask, np.ones(mask.shape, dtype=np.float32))
    assert colony.polygon.is_valid and colony.area == 21
    assert colony.polygon.equals_exact(Polygon(exact.exterior).simplify(1.0, preserve_topology=True), 1e-9)


def test_fragmented_outlines_are_valid_and_within_the_tolerance() -> None:
    rng = np.random.default_rng(5)
    mask = np.kron(rng.integers(0, 3, (60, 80), dtype=np.uint8), np.ones((3, 2), dtype=np.uint8))
    mask[rng.random(mask.shape) < 0.1] = 1  # blobs of a few pixels, many of them thin: a poor prediction
    confidence = np.ones(mask.shape, dtype=np.float32)
    exact = find_colonies(mask, confidence, tolerance=0)  # the traced outlines, in the same order
    simplified = find_colonies(mask, confidence, tolerance=1.0)
    assert [c.area for c in simplified] == [c.area for c in exact] and len(exact) > 50
    within = 0
    for colony, traced in zip(simplified, exact):
        assert colony.polygon.is_valid and not colony.polygon.interiors
        assert colony.polygon.equals_exact(_simplified(traced.polygon, 1.0), 1e-9)
        within += colony.polygon.hausdorff_distance(traced.polygon) <= 1.0 + 1e-9
    assert within >= len(exact) - 2  # all but the rare outlines simplified keeping their topology


HOLES = """
............
.aaaaaaaaaa.
.a.aaaaaaa.a
.aaaaaaacaaa
.aabbbbaaaa.
.aab.bbaaaa.
.aabbbbaaaa.
.aa.aaaaa.a.
.aaaaaaaaaa.
.aaaaccXaaa.
.aaaaaaaaaa.
............
"""  # holes of background (.), speckle (c: below 3 px) and a colony (b) inside a; X is background too


def test_holes_and_speckle_inside_a_colony_leave_its_outline_and_own_pixels_as_the_former_tracing() -> None:
    codes = {".": 0, "X": 0, "a": 1, "b": 2, "c": 3}
    mask = np.array([[codes[c] for c in row] for row in HOLES.split()], dtype=np.uint8)
    confidence = np.random.default_rng(0).random(mask.shape, dtype=np.float32)
    new = sorted(find_colonies(mask, confidence, min_area=3), key=lambda c: c.class_index)
    old = sorted(_reference_colonies(mask, confidence, min_area=3), key=lambda c: c[0])
    assert [c.class_index for c in new] == [c[0] for c in old] == [1, 2]
    for colony, (_, outline, mean, area, region) in zip(new, old):
        assert colony.polygon.equals_exact(outline, 1e-9) and colony.area == area
        assert colony.pixels.sum() == region.sum() == area
        assert abs(colony.confidence - mean) < 1e-9  # over its own pixels, not the filled ones
