"""Class-index masks back to polygons: how predictions reach CVAT and FiftyOne.

One polygon per 4-connected region of one class, holes kept, traced along pixel edges (so it
covers exactly the region's pixels under the centre rule of `rasterize`), then smoothed and
simplified to a tolerance in pixels without falling below an IoU of 0.99 with the region;
regions smaller than `min_area` pixels are dropped as noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import Polygon, shape

from common.labels import BACKGROUND_INDEX, IGNORE_INDEX


def mask_to_polygons(
    mask: np.ndarray,
    tolerance: float = 1.0,
    min_area: float = 16.0,
    min_iou: float = 0.99,
    skip: Iterable[int] = (BACKGROUND_INDEX, IGNORE_INDEX),
) -> list[tuple[int, Polygon]]:
    """(class index, polygon in pixel coordinates) for every connected region of a class-index mask.

    Each region's outline is smoothed (pixel staircases cut at their steps' midpoints) and
    simplified with `tolerance` pixels, halved until the polygon, rasterized again, covers the
    region with IoU >= `min_iou`; so simplification never costs more than that.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    keep = ~np.isin(mask, list(skip))
    if not keep.any():
        return []
    found = []
    for geometry, value in rasterio.features.shapes(mask, mask=keep, connectivity=4):
        exact = shape(geometry)
        if exact.area >= min_area:
            found.append((int(value), _simplify(exact, tolerance, min_iou)))
    return found


def _simplify(exact: Polygon, tolerance: float, min_iou: float) -> Polygon:
    """The simplest polygon (largest tolerance in tolerance, tolerance/2, ...) whose pixels match `exact`'s to `min_iou`."""
    smooth = Polygon(_step_midpoints(exact.exterior.coords), [_step_midpoints(ring.coords) for ring in exact.interiors])
    if not smooth.is_valid:
        smooth = exact
    x0, y0, x1, y1 = (int(v) for v in exact.bounds)
    window = Affine.translation(x0, y0)

    def pixels(polygon: Polygon) -> np.ndarray:
        return rasterio.features.rasterize(
            [(polygon, 1)], out_shape=(y1 - y0, x1 - x0), transform=window, dtype=np.uint8
        ).astype(bool)

    region = pixels(exact)
    while tolerance >= 0.1:
        candidate = smooth.simplify(tolerance, preserve_topology=True)
        drawn = pixels(candidate)
        if isinstance(candidate, Polygon) and (region & drawn).sum() >= min_iou * (region | drawn).sum():
            return candidate
        tolerance /= 2
    return exact


def _step_midpoints(coords: Sequence[tuple[float, float]]) -> np.ndarray:
    """A ring along pixel edges as the midpoints of its unit steps, keeping the corners between long edges:
    it follows the region's outline rather than its staircase, and a rectangle stays a rectangle."""
    corners = np.asarray(coords, dtype=np.float64)[:-1]
    ends = np.roll(corners, -1, axis=0)
    lengths = np.maximum(np.rint(np.abs(ends - corners).max(axis=1)).astype(int), 1)
    keep_corner = (lengths >= 2) & (np.roll(lengths, 1) >= 2)
    points = []
    for corner, end, length, keep in zip(corners, ends, lengths, keep_corner):
        if keep:
            points.append(corner[None])
        points.append(corner + (end - corner) * ((np.arange(length) + 0.5) / length)[:, None])
    return np.concatenate(points)


def polygon_to_fiftyone_points(polygon: Polygon, width: int, height: int) -> list[list[list[float]]]:
    """FiftyOne `Polyline.points` for a polygon: normalized rings, exterior first then holes, closing point dropped."""
    return polygons_to_fiftyone_points([polygon], width, height)[0]


def polygons_to_fiftyone_points(polygons: Sequence[Polygon], width: int, height: int) -> list[list[list[list[float]]]]:
    """`polygon_to_fiftyone_points` of many polygons in one pass over their coordinates (a photo's thousand colonies
    one by one cost more than writing them to FiftyOne)."""
    if not polygons:
        return []
    rings, owner = shapely.get_rings(np.asarray(polygons, dtype=object), return_index=True)
    coords = shapely.get_coordinates(rings) / np.array([width, height], dtype=np.float64)
    points: list[list[list[list[float]]]] = [[] for _ in polygons]
    for index, ring in zip(owner, np.split(coords, np.cumsum(shapely.get_num_coordinates(rings))[:-1])):
        points[index].append(ring[:-1].tolist())
    return points


def polygon_to_cvat_points(polygon: Polygon) -> list[float]:
    """CVAT's flat `[x1, y1, x2, y2, ...]` pixel points for a polygon's exterior (CVAT polygons have no holes)."""
    return [float(v) for xy in list(polygon.exterior.coords)[:-1] for v in xy]
