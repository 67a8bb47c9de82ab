"""Predicted colonies as CVAT shapes: the one conversion push_to_cvat, the auto-annotation function and the Nuclio function share.

A colony becomes a `polygon` (its simplified outline, flat pixel points, no holes: CVAT polygons
have none) or a `mask` (its exact pixels, holes kept). Masks are written the two ways CVAT reads
them: the REST API's and cvat-sdk's run lengths followed by the inclusive box `left, top, right,
bottom` (`cvat_sdk.masks.encode_mask`), and the Nuclio answer's `mask`, the box's pixels as 0/1 row
by row followed by the same inclusive box (CVAT's serverless functions answer so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluate.colonies import Colony
from prepare.polygons import polygon_to_cvat_points

POLYGON, MASK = "polygon", "mask"


@dataclass(frozen=True)
class ColonyShape:
    """One colony as a CVAT shape: `type` polygon or mask, flat `points` as the REST API stores them."""

    class_index: int
    type: str
    points: list[float]
    confidence: float


def keep_confident(colonies: Sequence[Colony], threshold: float | None) -> list[Colony]:
    """The colonies whose mean confidence reaches `threshold` (all of them when it is None)."""
    return list(colonies) if threshold is None else [c for c in colonies if c.confidence >= threshold]


def confidence_value(colony: Colony) -> str:
    """The confidence as CVAT stores a number attribute: an integer string, 0-100."""
    return str(int(round(100 * colony.confidence)))


def _box_and_pixels(colony: Colony) -> tuple[tuple[int, int, int, int], np.ndarray]:
    if colony.box is None or colony.pixels is None:
        raise ValueError("a mask shape needs the colony's pixels (colonies from find_colonies have them)")
    return colony.box, colony.pixels


def mask_points(colony: Colony, width: int, height: int) -> list[float]:
    """CVAT's RLE for the colony's pixels: run lengths from the box's first pixel (a 0-run first), then its inclusive box."""
    from cvat_sdk.masks import encode_mask

    (left, top, right, bottom), pixels = _box_and_pixels(colony)
    bitmap = np.zeros((height, width), dtype=bool)  # calloc'd: only the box's pages are ever touched
    bitmap[top:bottom, left:right] = pixels
    return [float(v) for v in encode_mask(bitmap, bbox=[left, top, right, bottom])]


def nuclio_mask(colony: Colony) -> list[int]:
    """The `mask` of a Nuclio answer: the box's pixels as 0/1, row by row, then the inclusive box."""
    (left, top, right, bottom), pixels = _box_and_pixels(colony)
    return pixels.astype(np.uint8).ravel().tolist() + [left, top, right - 1, bottom - 1]


def colony_shape(colony: Colony, width: int, height: int, as_mask: bool = False) -> ColonyShape:
    """The colony as a polygon, or as a mask with its holes when `as_mask`."""
    if as_mask:
        return ColonyShape(colony.class_index, MASK, mask_points(colony, width, height), colony.confidence)
    return ColonyShape(colony.class_index, POLYGON, polygon_to_cvat_points(colony.polygon), colony.confidence)


def nuclio_results(colonies: Sequence[Colony], names: dict[int, str], as_mask: bool = True) -> list[dict[str, Any]]:
    """CVAT's Nuclio detector answer: `{confidence, label, points, type}` per colony, plus `mask` for mask shapes.

    `points` is always the polygon outline: CVAT draws it when the user asks for polygons
    ("convert masks to polygons") and ignores it for masks.
    """
    results = []
    for colony in colonies:
        result: dict[str, Any] = {
            "confidence": f"{colony.confidence:.4f}", "label": names[colony.class_index],
            "points": polygon_to_cvat_points(colony.polygon), "type": MASK if as_mask else POLYGON,
        }  # fmt: skip
        if as_mask:
            result["mask"] = nuclio_mask(colony)
        results.append(result)
    return results
