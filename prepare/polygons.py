"""Class-index masks back to polygons: how predictions reach CVAT and FiftyOne.

One polygon per 4-connected region of one class, holes kept, traced along pixel edges (so before
simplification the polygon covers exactly the region's pixels under the centre rule of
`rasterize`), then simplified to a tolerance in pixels; regions smaller than `min_area` pixels
are dropped as noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import rasterio.features
from shapely.geometry import Polygon, shape

from prepare.layout import BACKGROUND_INDEX, IGNORE_INDEX


def mask_to_polygons(
    mask: np.ndarray,
    tolerance: float = 1.0,
    min_area: float = 16.0,
    skip: Iterable[int] = (BACKGROUND_INDEX, IGNORE_INDEX),
) -> list[tuple[int, Polygon]]:
    """(class index, polygon in pixel coordinates) for every connected region of a class-index mask."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    keep = ~np.isin(mask, list(skip))
    if not keep.any():
        return []
    found = []
    for geometry, value in rasterio.features.shapes(mask, mask=keep, connectivity=4):
        polygon = shape(geometry)
        if polygon.area < min_area:
            continue
        if tolerance > 0:
            polygon = polygon.simplify(tolerance, preserve_topology=True)
        if isinstance(polygon, Polygon) and not polygon.is_empty:
            found.append((int(value), polygon))
    return found


def polygon_to_fiftyone_points(polygon: Polygon, width: int, height: int) -> list[list[tuple[float, float]]]:
    """FiftyOne `Polyline.points` for a polygon: normalized rings, exterior first then holes, closing point dropped."""
    return [_normalized(ring.coords, width, height) for ring in (polygon.exterior, *polygon.interiors)]


def polygon_to_cvat_points(polygon: Polygon) -> list[float]:
    """CVAT's flat `[x1, y1, x2, y2, ...]` pixel points for a polygon's exterior (CVAT polygons have no holes)."""
    return [float(v) for xy in list(polygon.exterior.coords)[:-1] for v in xy]


def _normalized(coords: Sequence[tuple[float, float]], width: int, height: int) -> list[tuple[float, float]]:
    return [(float(x) / width, float(y) / height) for x, y in list(coords)[:-1]]
