"""Predicted masks as colonies: one outline per connected region of a class, with its confidence.

A reviewer thinks in colonies, not pixels, and CVAT stores polygons, so predictions are turned
into the same kind of shape annotators draw: an outline without holes (CVAT polygons have none,
and FiftyOne's polygon IoU fills them). The regions come from `prepare.polygons`, traced exactly
along pixel edges first so each can be tied to its pixels for the confidence, then simplified.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from shapely.geometry import Polygon

from prepare.polygons import mask_to_polygons

DEFAULT_TOLERANCE = 1.0  # pixels: simplification of the outline
DEFAULT_MIN_AREA = 16.0  # pixels: smaller regions are noise, not colonies


@dataclass(frozen=True)
class Colony:
    """One predicted colony: class index, outline in pixel coordinates, mean probability of its class."""

    class_index: int
    polygon: Polygon
    confidence: float
    area: float  # pixels of the region, before simplification
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom (exclusive) of the region's pixels
    pixels: np.ndarray | None = None  # [bottom-top, right-left] bool: the region's own pixels in `box`, holes left out


def find_colonies(
    mask: np.ndarray,
    confidence: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: float = DEFAULT_MIN_AREA,
) -> list[Colony]:
    """Colonies of a class-index mask; `confidence` [H,W] is the probability of each pixel's class."""
    region_means: dict[int, np.ndarray] = {}
    regions: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    colonies = []
    for class_index, exact in mask_to_polygons(mask, tolerance=0, min_area=min_area):
        if class_index not in regions:
            # 4-connectivity, like prepare.polygons' tracing, so a polygon is exactly one labelled region
            _, labels, stats, _ = cv2.connectedComponentsWithStats((mask == class_index).astype(np.uint8), connectivity=4)
            sums = np.bincount(labels.ravel(), weights=confidence.ravel().astype(np.float64))
            region_means[class_index] = sums / np.maximum(np.bincount(labels.ravel()), 1)
            regions[class_index] = labels, stats
        labels, stats = regions[class_index]
        point = exact.representative_point()  # strictly inside, so its pixel belongs to the region
        region = labels[int(point.y), int(point.x)]
        left, top, width, height = (int(v) for v in stats[region, :4])
        box = (left, top, left + width, top + height)
        outline = Polygon(exact.exterior)
        simplified = outline.simplify(tolerance, preserve_topology=True) if tolerance > 0 else outline
        pixels = labels[top : top + height, left : left + width] == region
        colonies.append(Colony(class_index, simplified, float(region_means[class_index][region]), float(exact.area), box, pixels))
    return colonies
