"""Colonies as CVAT shapes: polygons, REST masks (cvat-sdk's RLE) and Nuclio masks, all exact round trips."""

from __future__ import annotations

import numpy as np
from cvat_sdk.masks import decode_mask

from evaluate.colonies import find_colonies
from evaluate.cvat_shapes import colony_shape, confidence_value, keep_confident, nuclio_results


def _mask() -> np.ndarray:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[0:12, 0:20] = 1  # touches the top-left border, with a hole
    mask[4:8, 6:10] = 0
    mask[18:30, 28:40] = 2  # touches the bottom-right border
    return mask


def test_mask_shapes_decode_to_the_colony_s_own_pixels_holes_and_borders_included() -> None:
    mask = _mask()
    colonies = sorted(find_colonies(mask, np.full(mask.shape, 0.8, dtype=np.float32)), key=lambda c: c.class_index)
    for colony in colonies:
        shape = colony_shape(colony, 40, 30, as_mask=True)
        assert shape.type == "mask"
        assert (decode_mask(shape.points, image_width=40, image_height=30) == (mask == colony.class_index)).all()
    assert colony_shape(colonies[0], 40, 30, as_mask=True).points[-4:] == [
        0,
        0,
        19,
        11,
    ]  # inclusive box, as CVAT writes it
    polygon = colony_shape(colonies[1], 40, 30)
    assert polygon.type == "polygon" and sorted(zip(polygon.points[::2], polygon.points[1::2])) == [
        (28, 18),
        (28, 30),
        (40, 18),
        (40, 30),
    ]
    assert confidence_value(colonies[0]) == "80"


def test_nuclio_results_carry_the_box_s_bits_and_the_outline() -> None:
    mask = _mask()
    colonies = sorted(find_colonies(mask, np.full(mask.shape, 0.5, dtype=np.float32)), key=lambda c: c.class_index)
    first = nuclio_results(colonies, {1: "Acropora", 2: "Porites"})[0]
    assert first["label"] == "Acropora" and first["type"] == "mask" and float(first["confidence"]) == 0.5
    bits, (left, top, right, bottom) = first["mask"][:-4], first["mask"][-4:]
    assert (left, top, right, bottom) == (0, 0, 19, 11)
    assert (np.array(bits).reshape(bottom - top + 1, right - left + 1) == (mask[0:12, 0:20] == 1)).all()
    assert len(first["points"]) == 8  # the outline without the hole, for "convert masks to polygons"
    assert "mask" not in nuclio_results(colonies, {1: "Acropora", 2: "Porites"}, as_mask=False)[0]


def test_keep_confident_uses_the_colony_mean() -> None:
    mask = _mask()
    confidence = np.where(mask == 1, 0.9, 0.3).astype(np.float32)
    colonies = find_colonies(mask, confidence)
    assert [c.class_index for c in keep_confident(colonies, 0.5)] == [1]
    assert len(keep_confident(colonies, None)) == 2
