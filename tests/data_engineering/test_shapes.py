"""One CVAT shape -> one normalized polygon: kept, clamped, skipped and refused as the contract says."""

from __future__ import annotations

import pytest

from common.cli import UserError
from data_engineering.shapes import (
    INVALID_MASK,
    NO_AREA,
    OPEN_POLYLINE,
    OUTSIDE_IMAGE,
    TOO_FEW_POINTS,
    CvatShape,
    attribute_field_name,
    parse_confidence,
    shapes_to_polygons,
)


def polygon(points, **kwargs) -> CvatShape:
    return CvatShape(type=kwargs.pop("type", "polygon"), label=kwargs.pop("label", "Acropora"), points=points, **kwargs)


def test_polygon_is_normalized_and_keeps_sub_pixel_points_and_attributes():
    shape = polygon(
        [10.37, 20.5, 90.25, 20.5, 50.0, 80.75],
        z_order=3,
        occluded=True,
        attributes={"confidence": "87", "health": "bleached"},
        shape_id=42,
    )
    [record], skipped = shapes_to_polygons([shape], width=100, height=200)
    assert not skipped
    flat = [c for point in record.points for c in point]
    assert flat == pytest.approx([0.1037, 0.1025, 0.9025, 0.1025, 0.5, 0.40375], abs=1e-12)
    assert (record.label, record.z_order, record.occluded, record.shape_id) == ("Acropora", 3, True, 42)
    assert record.confidence == pytest.approx(0.87)
    assert record.attributes == {"health": "bleached"}
    assert not record.clipped


def test_points_outside_the_image_are_clamped_to_its_border():
    [record], _ = shapes_to_polygons([polygon([-5, -5, 120, 10, 50, 300])], width=100, height=100)
    assert record.points == [(0.0, 0.0), (1.0, 0.1), (0.5, 1.0)]
    assert record.clipped


def test_fewer_than_three_points_outside_and_other_types_are_skipped_and_counted():
    shapes = [
        polygon([1, 1, 5, 5]),
        polygon([1, 1, 5, 5, 1, 1, 5, 5]),  # two distinct points repeated
        polygon([200, 10, 300, 10, 250, 50]),  # wholly right of the image: all clamp onto one edge
        polygon([1, 1, 10, 1, 10, 10, 1, 10], type="rectangle"),
        polygon([1, 1], type="points"),
        polygon([0, 0, 50, 0, 50, 50, 0, 50]),
        polygon([0, 0, 10, 10, 20, 20]),
    ]
    polygons, skipped = shapes_to_polygons(shapes, width=100, height=100)
    assert len(polygons) == 1
    assert skipped == {TOO_FEW_POINTS: 2, OUTSIDE_IMAGE: 1, NO_AREA: 1, "rectangle": 1, "points": 1}


def test_polyline_outlining_a_colony_becomes_a_polygon_and_an_open_line_does_not():
    outline = polygon([10, 10, 60, 10, 60, 60, 10, 60, 11, 12], type="polyline")
    line = polygon([10, 10, 50, 10, 90, 15], type="polyline")
    polygons, skipped = shapes_to_polygons([outline, line], width=100, height=100)
    assert [len(p.points) for p in polygons] == [5]
    assert skipped == {OPEN_POLYLINE: 1}


def test_closing_point_repeated_by_the_annotator_is_dropped():
    [record], _ = shapes_to_polygons([polygon([0, 0, 10, 0, 10, 10, 0, 0])], width=10, height=10)
    assert record.points == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]


@pytest.mark.parametrize("label", ["", "   "])
def test_label_with_an_empty_name_is_a_clear_error(label):
    with pytest.raises(UserError, match="empty name"):
        shapes_to_polygons([polygon([0, 0, 10, 0, 10, 10], label=label, shape_id=7)], 10, 10, where="task 1, a.jpg")


def test_confidence_and_attribute_names():
    assert parse_confidence(" 50 ") == 0.5 and parse_confidence("58") == pytest.approx(0.58)
    assert parse_confidence("100") == 1.0 and parse_confidence("0") == 0.0  # CVAT's percent, FiftyOne's 0-1
    assert parse_confidence("150") is None and parse_confidence("-5") is None
    assert parse_confidence("high") is None and parse_confidence(None) is None and parse_confidence("nan") is None
    assert attribute_field_name("health state") == "health_state"
    assert attribute_field_name("label") == "cvat_label"
    assert attribute_field_name("2nd.look") == "cvat_2nd_look"


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        ([1, 1, 20, 1, float("nan"), 20], "not finite numbers"),
        ([1, 1, 20, 1, 20, float("inf")], "not finite numbers"),
        ([1, 1, 20, 1, 20, "x"], "not finite numbers"),
        ([1, 1, 20, 1, 20, 20, 5], "an odd number of coordinates (7)"),
    ],
)
@pytest.mark.parametrize("shape_type", ["polygon", "polyline"])
def test_points_that_are_not_finite_pairs_are_refused_naming_the_shape(points, problem, shape_type):
    good = polygon([1, 1, 20, 1, 20, 20])
    with pytest.raises(UserError, match=r"polygon|polyline") as error:
        shapes_to_polygons([good, polygon(points, type=shape_type, label="Porites")], 40, 30, where="task 3, a.jpg")
    assert f"{shape_type} number 2 (label 'Porites') of task 3, a.jpg has " in str(error.value) and problem in str(
        error.value
    )
    with pytest.raises(UserError, match=r"#17 \(label 'Porites'\)"):
        shapes_to_polygons([polygon(points, type=shape_type, label="Porites", shape_id=17)], 40, 30)


def test_other_shape_types_keep_their_own_point_counts():
    mask = CvatShape(
        type="mask", label="Porites", points=[3, 2, 4, 0, 0, 2, 2]
    )  # RLE + box: any count (a 3x3 box here)
    [colony], skipped = shapes_to_polygons([mask], 40, 30)
    assert not skipped and sorted(colony.points) == sorted(
        [(0.0, 1 / 30), (0.0, 2 / 30), (2 / 40, 2 / 30), (2 / 40, 1 / 30)]
    )
    broken = CvatShape(
        type="mask", label="Porites", points=[3, 2, 4, 0, 0, 5, 5]
    )  # runs cover 9 of the box's 36 pixels
    assert shapes_to_polygons([broken], 40, 30) == ([], {INVALID_MASK: 1})
