"""One CVAT shape -> one closed, filled polygon in normalized coordinates (pure; no CVAT, no FiftyOne).

Shared by the live pull and the export import, so both turn annotations into identical records.

    shape = CvatShape(type="polygon", label="Acropora", points=[x1, y1, x2, y2, ...],  # pixels
                      z_order=2, occluded=False, attributes={"confidence": "80"}, shape_id=17)
    polygons, skipped = shapes_to_polygons(shapes, width, height, where="task 3, Moorea_2021_03.jpg")
    # polygons: list[PolygonRecord]; skipped: Counter {reason: count}, reasons in SKIP_REASONS or a shape type

Rules: `polygon` shapes, and `polyline` shapes that outline a colony (their ends meet within
OUTLINE_MAX_GAP of the line's length), become polygons; `mask` shapes (brush, SAM) become the rings
of their pixels, holes kept (`data_engineering.cvat_masks`); every other type is skipped and counted
under its type name. Points outside the image are clamped to its border; a polygon left with
fewer than 3 distinct points, or with no area inside the image, is skipped and counted. A shape
whose label has no name is an error the user must fix in CVAT (`UserError`), and so is a polygon or
polyline whose points are not finite numbers (NaN, inf) or not whole (x, y) pairs (an odd count):
CVAT never writes those, so the export or the server's answer is damaged and importing the rest
would silently lose a colony (`check_points`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from common.cli import UserError
from data_engineering.cvat_masks import MaskError, decode_rle, mask_rings

POLYGON_TYPES = ("polygon", "polyline")
MASK_TYPE = "mask"
OUTLINE_MAX_GAP = (
    0.25  # a polyline whose ends are further apart than this share of its length is a line, not an outline
)
CONFIDENCE_ATTRIBUTE = "confidence"

TOO_FEW_POINTS = "fewer than 3 points"
OPEN_POLYLINE = "open polyline"
NO_AREA = "no area (points on one line)"
OUTSIDE_IMAGE = "outside the image"
EMPTY_MASK = "empty mask"
INVALID_MASK = "invalid mask (runs do not fill its box)"
SKIP_REASONS = (TOO_FEW_POINTS, OPEN_POLYLINE, NO_AREA, OUTSIDE_IMAGE, EMPTY_MASK, INVALID_MASK)

# fo.Polyline's own fields: a CVAT attribute of the same name is stored as `cvat_<name>` instead
RESERVED_ATTRIBUTE_NAMES = frozenset(
    {"id", "label", "points", "closed", "filled", "confidence", "index", "tags", "attributes"}
)


@dataclass(frozen=True)
class CvatShape:
    """A CVAT shape as both the REST API and the XML export describe it, with names resolved."""

    type: str
    label: str
    points: Sequence[float]  # flat [x1, y1, x2, y2, ...] in pixels, as CVAT stores them
    z_order: int = 0
    occluded: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)  # attribute name -> CVAT's string value
    shape_id: int | None = None


@dataclass(frozen=True)
class PolygonRecord:
    """A colony outline ready for FiftyOne: a closed ring of (x, y) in [0, 1], the first point not repeated."""

    label: str
    points: list[tuple[float, float]]
    z_order: int
    occluded: bool
    confidence: float | None
    attributes: dict[str, str]  # every CVAT attribute except confidence, names safe as FiftyOne fields
    shape_id: int | None
    clipped: bool  # some point lay outside the image and was moved onto its border
    # a mask's further rings (its holes, its other regions), normalized like `points`: the colony is what lies
    # inside an odd number of all its rings (FiftyOne's and prepare's rule for a polyline of several rings)
    other_rings: tuple[list[tuple[float, float]], ...] = ()


def attribute_field_name(name: str) -> str:
    """A CVAT attribute name as a FiftyOne attribute name: no dots or spaces, never one of fo.Polyline's own."""
    safe = re.sub(r"\W", "_", name.strip()) or "attribute"
    return f"cvat_{safe}" if safe in RESERVED_ATTRIBUTE_NAMES or safe[0].isdigit() else safe


def parse_confidence(value: str | None) -> float | None:
    """CVAT's `confidence` attribute (a percent, 0-100: CVAT number attributes hold integers) as 0-1, FiftyOne's scale.

    Blank, not a number, or outside 0-100 -> None (no percent, so no confidence to keep).
    """
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number / 100 if math.isfinite(number) and 0 <= number <= 100 else None


def _pairs(points: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(points[i]), float(points[i + 1])) for i in range(0, len(points) - 1, 2)]


def _distinct_ring(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Consecutive duplicates dropped, and the closing repeat of the first point, if any."""
    ring: list[tuple[float, float]] = []
    for point in pairs:
        if not ring or point != ring[-1]:
            ring.append(point)
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()
    return ring


def _clamp(pairs: list[tuple[float, float]], width: int, height: int) -> list[tuple[float, float]]:
    return [(min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))) for x, y in pairs]


def _ring_area(ring: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]))) / 2


def is_colony_outline(pairs: Sequence[tuple[float, float]]) -> bool:
    """Whether a polyline outlines a colony: at least 3 points and its two ends close to each other."""
    if len(pairs) < 3:
        return False
    length = sum(math.dist(a, b) for a, b in zip(pairs, pairs[1:]))
    return length > 0 and math.dist(pairs[0], pairs[-1]) <= OUTLINE_MAX_GAP * length


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def check_points(shape: CvatShape, where: str = "", index: int | None = None) -> None:
    """Refuse a polygon or polyline whose points are not finite or not (x, y) pairs, naming the shape."""
    if shape.type not in POLYGON_TYPES:
        return
    count = len(shape.points)
    if count % 2:
        problem = f"an odd number of coordinates ({count}), so its points are not (x, y) pairs"
    elif not all(_finite(v) for v in shape.points):
        problem = "coordinates that are not finite numbers (NaN or infinity)"
    else:
        return
    name = f"#{shape.shape_id}" if shape.shape_id is not None else f"number {index + 1}" if index is not None else ""
    place = f" of {where}" if where else ""
    raise UserError(
        f"{shape.type} {name} (label {shape.label!r}){place} has {problem}; the export or CVAT's answer is damaged: "
        "fix or redraw that shape in CVAT and import again"
    )


def skip_reason(shape: CvatShape, width: int, height: int) -> str | None:
    """Why `shape` gives no polygon (a SKIP_REASONS entry or the shape's type), or None when it gives one."""
    if shape.type not in POLYGON_TYPES:
        return shape.type
    pairs = _pairs(shape.points)
    if len(set(pairs)) < 3:
        return TOO_FEW_POINTS
    if shape.type == "polyline" and not is_colony_outline(pairs):
        return OPEN_POLYLINE
    if _ring_area(_distinct_ring(pairs)) == 0:
        return NO_AREA
    if _ring_area(_distinct_ring(_clamp(pairs, width, height))) == 0:
        return OUTSIDE_IMAGE
    return None


def _check_label(shape: CvatShape, where: str) -> None:
    if not shape.label or not shape.label.strip():
        place = f" ({where})" if where else ""
        raise UserError(
            f"shape {shape.shape_id}{place} has a label with an empty name; name the label in CVAT and import again"
        )


def mask_to_polygon(shape: CvatShape, width: int, height: int, where: str = "") -> PolygonRecord | str:
    """A `mask` shape as one polygon record whose rings are its pixels' outlines (holes kept), or why it gives none."""
    _check_label(shape, where)
    try:
        bitmap, left, top = decode_rle(shape.points)
    except MaskError:
        return INVALID_MASK
    rings, clipped = mask_rings(bitmap, left, top, width, height)
    if not rings:
        return EMPTY_MASK
    normalized = [[(x / width, y / height) for x, y in ring] for ring in rings]
    return PolygonRecord(
        label=shape.label.strip(),
        points=normalized[0],
        z_order=int(shape.z_order),
        occluded=bool(shape.occluded),
        confidence=parse_confidence(shape.attributes.get(CONFIDENCE_ATTRIBUTE)),
        attributes={attribute_field_name(k): v for k, v in shape.attributes.items() if k != CONFIDENCE_ATTRIBUTE},
        shape_id=shape.shape_id,
        clipped=clipped,
        other_rings=tuple(normalized[1:]),
    )


def shape_to_polygon(shape: CvatShape, width: int, height: int, where: str = "") -> PolygonRecord:
    """The polygon of a shape that `skip_reason` accepts, clamped to the image and normalized by its size."""
    _check_label(shape, where)
    pairs = _distinct_ring(_pairs(shape.points))
    clamped = _clamp(pairs, width, height)
    ring = _distinct_ring(clamped)
    attributes = {attribute_field_name(k): v for k, v in shape.attributes.items() if k != CONFIDENCE_ATTRIBUTE}
    return PolygonRecord(
        label=shape.label.strip(),
        points=[(x / width, y / height) for x, y in ring],
        z_order=int(shape.z_order),
        occluded=bool(shape.occluded),
        confidence=parse_confidence(shape.attributes.get(CONFIDENCE_ATTRIBUTE)),
        attributes=attributes,
        shape_id=shape.shape_id,
        clipped=clamped != pairs,
    )


def shapes_to_polygons(
    shapes: Iterable[CvatShape], width: int, height: int, where: str = ""
) -> tuple[list[PolygonRecord], Counter[str]]:
    """The polygons of one image's shapes, and the skipped ones counted by reason."""
    if width <= 0 or height <= 0:
        raise UserError(f"image size {width}x{height} is not valid ({where}); check the image and its CVAT metadata")
    polygons: list[PolygonRecord] = []
    skipped: Counter[str] = Counter()
    for index, shape in enumerate(shapes):
        check_points(shape, where, index)
        if shape.type == MASK_TYPE:
            found = mask_to_polygon(shape, width, height, where)
            if isinstance(found, str):
                skipped[found] += 1
            else:
                polygons.append(found)
            continue
        reason = skip_reason(shape, width, height)
        if reason is None:
            polygons.append(shape_to_polygon(shape, width, height, where))
        else:
            skipped[reason] += 1
    return polygons, skipped
