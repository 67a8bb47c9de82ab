"""Each region's exterior ring along pixel edges, traced with array operations only.

Why not GDAL's polygonize (`rasterio.features.shapes`, which `prepare.polygons` uses): it holds the GIL for the
whole call (0.08–0.23 s of a 1920² prediction's, `benchmarks/bench_colonies.py`), and `predict.py` traces colonies
on a thread beside the model, whose next operation waits for it while it does. NumPy lets the GIL go inside its
loops (0.002–0.011 s held here), and these rings take less time than GDAL's (1.1–1.5×).

The rings are GDAL's (with `connectivity=4`), point for point (tests compare them on random masks): the region on
the traveller's left as the image is shown (y down), corners only, starting at the top-left corner of the region's
first pixel in raster order and heading down; where a region touches itself only diagonally the ring passes
through that corner, as GDAL's does. Holes are not returned: colonies have none (CVAT polygons cannot).

How: every corner of a region's boundary is an event, with the direction the boundary arrives in and the one it
leaves in. The corner after an event is the nearest event of the same region on the same grid line ahead that
arrives in the direction this one leaves (one sort, one binary search). Each region's ring is read off by pointer
jumping from its first corner; corners on cycles that never reach a first corner are its holes, and are dropped.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

SOUTH, EAST, NORTH, WEST = range(4)  # y grows southwards, as in the image
NW, NE, SW, SE = range(4)  # the 2x2 pixels around a vertex; vertex (x, y) is the top-left corner of pixel (x, y)
# per pixel q around a vertex: its two side neighbours and its diagonal, the boundary's turn (arriving, leaving)
# where q alone is the region's (convex) and where q's sides are too but not its diagonal (concave)
CORNERS = (
    (NW, (NE, SW), SE, (EAST, NORTH), (NORTH, EAST)),
    (NE, (NW, SE), SW, (SOUTH, EAST), (EAST, SOUTH)),
    (SW, (NW, SE), NE, (NORTH, WEST), (WEST, NORTH)),
    (SE, (NE, SW), NW, (WEST, SOUTH), (SOUTH, WEST)),
)
# q and its diagonal alone (a region touching itself at a corner): the boundary passes through, twice
PINCHES = ((NW, (NE, SW), SE, ((WEST, NORTH), (EAST, SOUTH))), (NE, (NW, SE), SW, ((SOUTH, WEST), (NORTH, EAST))))


class Rings(NamedTuple):
    """Exterior rings, closed (each first point repeated at its end), one per region, in ascending region id."""

    points: np.ndarray  # [N, 2] int64 x, y of every ring's corners, ring after ring
    ring_of: np.ndarray  # [N] the ring each point belongs to
    regions: np.ndarray  # [rings] the region id of each ring


class _Corners(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    region: np.ndarray
    arrive: np.ndarray
    leave: np.ndarray
    first: np.ndarray  # the corner each region's ring starts at, in ascending region id
    regions: np.ndarray  # those ids


def _corners(ids: np.ndarray) -> _Corners:
    """Every boundary corner of every region > 0, each with how the boundary arrives and leaves."""
    height, width = ids.shape
    padded = np.zeros((height + 2, width + 2), dtype=ids.dtype)
    padded[1:-1, 1:-1] = ids
    top, bottom = padded[:-1], padded[1:]
    mixed = (top[:, :-1] != top[:, 1:]) | (top[:, :-1] != bottom[:, :-1]) | (top[:, :-1] != bottom[:, 1:])
    vy, vx = np.nonzero(mixed)  # vertices where regions meet: the only ones that can be corners (raster order)
    around = np.stack([padded[vy, vx], padded[vy, vx + 1], padded[vy + 1, vx], padded[vy + 1, vx + 1]])
    picked: list[tuple[np.ndarray, int, int, int]] = []  # (where, the pixel q whose region it is, arrive, leave)
    first = regions = np.zeros(0, dtype=np.int64)
    offset = 0
    for q, sides, diagonal, convex_turn, concave_turn in CORNERS:
        own = around[q]
        side_a, side_b = around[sides[0]] == own, around[sides[1]] == own
        on_diagonal = around[diagonal] == own
        counted = (own > 0) & ~on_diagonal
        for selected, (arrive, leave) in (
            (counted & ~side_a & ~side_b, convex_turn),
            (counted & side_a & side_b, concave_turn),
        ):
            where = np.flatnonzero(selected)
            if q == SE and arrive == WEST:  # the top-left corners of pixels: each region's first one starts it
                regions, at = np.unique(own[where], return_index=True)
                first = offset + at
            picked.append((where, q, arrive, leave))
            offset += len(where)
    for q, sides, diagonal, turns in PINCHES:
        own = around[q]
        pinched = (own > 0) & (around[diagonal] == own) & (around[sides[0]] != own) & (around[sides[1]] != own)
        where = np.flatnonzero(pinched)
        picked += [(where, q, arrive, leave) for arrive, leave in turns]
    at = np.concatenate([where for where, *_ in picked])

    def repeated(column: int) -> np.ndarray:
        return np.concatenate([np.full(len(entry[0]), entry[column], dtype=np.int64) for entry in picked])

    return _Corners(
        vx[at].astype(np.int64),
        vy[at].astype(np.int64),
        around[repeated(1), at].astype(np.int64),
        repeated(2),
        repeated(3),
        first,
        regions.astype(np.int64),
    )


def _line_keys(corners: _Corners, direction: np.ndarray, span: int) -> np.ndarray:
    """A sortable key per corner: its region, a direction, the grid line along it, the place on that line."""
    vertical = (direction == SOUTH) | (direction == NORTH)
    line = np.where(vertical, corners.x, corners.y)
    place = np.where(vertical, corners.y, corners.x)
    return ((corners.region * 4 + direction) * span + line) * span + place


def exterior_rings(ids: np.ndarray) -> Rings:
    """The exterior ring of every region of `ids` ([H, W] integers, 0 = none), as GDAL traces it (module doc)."""
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("exterior_rings takes a 2-D array of integer region ids")
    corners = _corners(ids)
    count = len(corners.x)
    if not count:
        empty = np.zeros(0, dtype=np.int64)
        return Rings(np.zeros((0, 2), dtype=np.int64), empty, empty)
    span = max(ids.shape) + 2
    if (int(corners.region.max()) * 4 + 4) * span * span >= 2**63:
        raise ValueError("too many regions in too large an image to trace")
    arriving = _line_keys(corners, corners.arrive, span)
    by_key = np.argsort(arriving)
    leaving = _line_keys(corners, corners.leave, span)
    # no corner arrives where one of its region leaves in the same direction, so the nearest on the line ahead is the
    # first key above (south, east) or the last below (north, west)
    behind = (corners.leave == NORTH) | (corners.leave == WEST)
    following = by_key[np.searchsorted(arriving[by_key], leaving) - behind]
    # each ring cut open just before its first corner, then every corner's distance to that cut (pointer jumping)
    before = np.empty(count, dtype=np.int64)
    before[following] = np.arange(count)
    last = before[corners.first]
    step, to_last = following.copy(), np.ones(count, dtype=np.int64)
    step[last], to_last[last] = last, 0
    for _ in range(max(1, math.ceil(math.log2(count)))):
        to_last += to_last[step]
        step = step[step]
    ring_of_last = np.full(count, -1, dtype=np.int64)
    ring_of_last[last] = np.arange(len(last))
    ring = ring_of_last[step]
    kept = np.flatnonzero(ring >= 0)  # the others lie on holes
    ring = ring[kept]
    lengths = np.bincount(ring, minlength=len(last))
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    order = np.empty(int(lengths.sum()) + len(last), dtype=np.int64)
    order[starts[ring] + lengths[ring] - 1 - to_last[kept]] = kept
    order[starts + lengths] = corners.first  # closed: the first point again
    points = np.stack([corners.x[order], corners.y[order]], axis=1)
    return Rings(points, np.repeat(np.arange(len(last)), lengths + 1), corners.regions)
