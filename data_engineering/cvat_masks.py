"""CVAT `mask` shapes (brush and SAM-assisted drawings) -> the rings of the pixels they cover (pure).

CVAT stores a mask as run lengths over its bounding box, followed by the box:
`points = [r0, r1, r2, ..., left, top, right, bottom]`. The box is inclusive (`right` and `bottom`
are the last column and row the mask covers, so it is `right - left + 1` pixels wide); the runs
scan the box row by row, alternate 0s and 1s and always start with a run of 0s (of length 0
when the box's first pixel is set). This is how CVAT's UI, its server and cvat-sdk's
`cvat_sdk.masks.encode_mask` write them; the "CVAT for images 1.1" XML writes the same runs as
`<mask rle="r0, r1, ..." left top width height>`.

    bitmap, left, top = decode_rle(shape.points)             # the box's pixels, True where the mask is
    rings, clipped = mask_rings(bitmap, left, top, width, height)

`mask_rings` traces every 4-connected region of the mask along pixel edges (holes kept, as rings of
their own), so the area inside an odd number of the rings is exactly the mask's pixels: drawn with
the pixel-centre rule of prepare's rasterizer, the rings give back the mask pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio.features
from affine import Affine
from shapely.geometry import shape as geojson_shape


class MaskError(ValueError):
    """The points are not a CVAT mask (runs that do not fill their box, a negative run, a box with no size)."""


def _integer(value: float) -> int:
    number = float(value)
    if not number.is_integer():
        raise MaskError(f"non-integer value {value!r} in a mask")
    return int(number)


def decode_rle(points: Sequence[float]) -> tuple[np.ndarray, int, int]:
    """CVAT's mask points as (boolean bitmap of the box, left, top); MaskError when they do not describe one."""
    if len(points) < 5:
        raise MaskError("a mask needs run lengths and its box")
    *runs, left, top, right, bottom = (_integer(v) for v in points)
    box_width, box_height = right - left + 1, bottom - top + 1
    if box_width <= 0 or box_height <= 0:
        raise MaskError(f"mask box {left},{top},{right},{bottom} has no size")
    if min(runs) < 0 or sum(runs) != box_width * box_height:
        raise MaskError(
            f"mask runs cover {sum(runs)} pixels, its {box_width}x{box_height} box holds {box_width * box_height}"
        )
    values = np.arange(len(runs)) % 2 == 1  # runs alternate 0s, 1s, 0s, ... starting with 0s
    return np.repeat(values, runs).reshape(box_height, box_width), left, top


def mask_rings(
    bitmap: np.ndarray, left: int, top: int, width: int, height: int
) -> tuple[list[list[tuple[float, float]]], bool]:
    """The mask's regions as rings of pixel-corner coordinates in the image, largest region first, each region's
    exterior followed by its holes (closing point not repeated); and whether part of the box lay outside the image."""
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + bitmap.shape[1], width), min(top + bitmap.shape[0], height)
    clipped = (x0, y0, x1, y1) != (left, top, left + bitmap.shape[1], top + bitmap.shape[0])
    if x1 <= x0 or y1 <= y0:
        return [], clipped
    inside = np.ascontiguousarray(bitmap[y0 - top : y1 - top, x0 - left : x1 - left], dtype=np.uint8)
    if not inside.any():
        return [], clipped
    regions = [
        geojson_shape(geometry)
        for geometry, _ in rasterio.features.shapes(
            inside, mask=inside.astype(bool), connectivity=4, transform=Affine.translation(x0, y0)
        )
    ]
    rings = []
    for region in sorted(regions, key=lambda r: -r.area):
        for ring in (region.exterior, *region.interiors):
            rings.append([(float(x), float(y)) for x, y in list(ring.coords)[:-1]])
    return rings, clipped
