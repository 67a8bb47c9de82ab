"""Predicted masks as colonies: one outline per connected region of a class, with its confidence.

A reviewer thinks in colonies, not pixels, and CVAT stores polygons, so predictions are turned
into the same kind of shape annotators draw: an outline without holes (CVAT polygons have none,
and FiftyOne's polygon IoU fills them). The regions are traced exactly along pixel edges, as
`prepare.polygons` traces them, each tied to its own pixels for the confidence, then simplified
to within `tolerance` pixels of the traced outline (`simplify_outlines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import rasterio.features
import scipy.ndimage
import shapely
import skimage.measure
from shapely.geometry import Polygon

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


def label_regions(mask: np.ndarray, skip: tuple[int, ...] = (0, 255)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every 4-connected region of every class numbered once, in one pass over the mask: (region ids [H,W],
    0 = none; class of each id; left, top, width, height, pixel count of each id, as OpenCV's CC stats)."""
    regions = skimage.measure.label(mask, background=-1, connectivity=1).astype(np.int32)  # equal neighbours join
    regions[np.isin(mask, skip)] = 0  # their ids stay unused: an id with no pixels has zero stats
    count = int(regions.max()) + 1
    region_class = np.zeros(count, dtype=np.int64)
    region_class[regions.ravel()] = mask.ravel()
    stats = np.zeros((count, 5), dtype=np.int64)
    for index, found in enumerate(scipy.ndimage.find_objects(regions), start=1):
        if found is not None:
            rows, columns = found
            stats[index, :4] = columns.start, rows.start, columns.stop - columns.start, rows.stop - rows.start
    stats[:, 4] = np.bincount(regions.ravel(), minlength=count)
    stats[0, 4] = 0
    return regions, region_class, stats


def outline_polygons(outlines: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """A polygon (without holes) per outline [[x, y], ...], all built in one call rather than one by one."""
    if not outlines:
        return np.array([], dtype=object)
    coordinates, ring_of = _stacked(outlines)
    return shapely.polygons(shapely.linearrings(coordinates, indices=ring_of))


def _stacked(outlines: Sequence[Sequence[Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Every outline's points in one [N, 2] array, and the outline each point belongs to."""
    rings = [np.asarray(ring, dtype=np.float64) for ring in outlines]
    return np.concatenate(rings), np.repeat(np.arange(len(rings)), [len(r) for r in rings])


def simplify_outlines(outlines: Sequence[Sequence[Sequence[float]]], tolerance: float) -> np.ndarray:
    """A valid polygon per closed outline [[x, y], ...], every traced point within `tolerance` of it.

    Douglas–Peucker on each outline as a closed line (its first point kept), in one call; only an outline
    it would make cross itself or collapse below a triangle (1–2 in 2,500 fragments of a poor prediction)
    goes through GEOS's topology-preserving simplifier instead. Same guarantee of a valid polygon as that
    simplifier on every outline, but a fifth of the time, and it stays within `tolerance` where that one
    does not (it moves a ring's first point, up to 1.9 px for 1 px on fragments).
    """
    if not outlines:
        return np.array([], dtype=object)
    coordinates, ring_of = _stacked(outlines)
    lines = shapely.simplify(shapely.linestrings(coordinates, indices=ring_of), tolerance, preserve_topology=False)
    points, line_of = shapely.get_coordinates(lines, return_index=True)
    polygons = np.empty(len(outlines), dtype=object)
    closed = np.bincount(line_of, minlength=len(outlines)) >= 4  # a triangle at least, its first point repeated
    kept = closed[line_of]
    polygons[closed] = shapely.polygons(
        shapely.linearrings(points[kept], indices=np.searchsorted(np.flatnonzero(closed), line_of[kept]))
    )
    closed[closed] = shapely.is_valid(polygons[closed])
    crossed = np.flatnonzero(~closed)
    if len(crossed):
        polygons[crossed] = shapely.simplify(
            outline_polygons([outlines[int(k)] for k in crossed]), tolerance, preserve_topology=True
        )
    return polygons


def find_colonies(
    mask: np.ndarray,
    confidence: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: float = DEFAULT_MIN_AREA,
) -> list[Colony]:
    """Colonies of a class-index mask; `confidence` [H,W] is the probability of each pixel's class.

    Regions are numbered once (`label_regions`) and the id image is traced, so each outline comes with its
    region's id: its confidence, size and pixels are read by id, not looked up again per colony, and regions
    below `min_area` pixels are never traced. The outlines are those `prepare.polygons` traces (4-connected,
    along pixel edges); a traced region's area is its pixel count.
    """
    regions, region_class, stats = label_regions(np.ascontiguousarray(mask, dtype=np.uint8))
    areas = stats[:, cv2.CC_STAT_AREA]
    means = np.bincount(regions.ravel(), weights=confidence.ravel().astype(np.float64), minlength=len(areas))
    means = means / np.maximum(areas, 1)
    keep = (regions > 0) & (areas >= min_area)[regions]
    if not keep.any():
        return []
    ids, exteriors = [], []
    for geometry, value in rasterio.features.shapes(regions, mask=keep, connectivity=4):
        ids.append(int(value))
        exteriors.append(geometry["coordinates"][0])
    outlines = simplify_outlines(exteriors, tolerance) if tolerance > 0 else outline_polygons(exteriors)
    colonies = []
    for region, outline in zip(ids, outlines):
        left, top, width, height = (int(v) for v in stats[region, :4])
        pixels = regions[top : top + height, left : left + width] == region
        colonies.append(
            Colony(
                int(region_class[region]),
                outline,
                float(means[region]),
                float(areas[region]),
                (left, top, left + width, top + height),
                pixels,
            )
        )
    return colonies
