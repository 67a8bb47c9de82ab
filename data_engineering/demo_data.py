"""Synthetic reef quadrats as a "CVAT for images 1.1" project export: the data every stage's demo and tests run on.

    make_demo_export(Path("data/demo/cvat_export"), num_images=30, size=448, colonies=16, seed=0)

Each image is a 1 m x 1 m quadrat seen from above: a textured substrate under overlapping colonies.
A colony's outline (round, lobed, branching, plate, ...) and its surface (corallite cells, ridges,
verrucae, septa, meanders, ...) and colours follow its genus, so a small model can learn to tell
genera apart. The same quadrats come back in several years, with colonies grown, lost and recruited.
Each (site, quadrat) belongs to one of three CVAT tasks (subsets Train, Validation, Test), so the
years of one quadrat never straddle two splits.

Deterministic: image i depends only on (seed, size, colonies, i), never on how many images are asked
for; a second run with the same flags rewrites identical bytes and skips images already on disk.
Layout (as CVAT writes a project export with images):
`<output>/annotations.xml`, `<output>/images/<subset>/<site>_<year>_<quadrat>.jpg`, `<output>/demo_manifest.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np
from PIL import Image
from shapely.geometry import Polygon

from common.cli import UserError, run
from common.fileio import atomic_path, write_text_atomic
from common.progress import progress
from common.settings import load_settings

PROJECT_NAME = "synthetic_reef"
QUADRAT_CM = 100.0
SITES = ("Moorea", "Tetiaroa", "Rangiroa")
YEARS = (2019, 2021, 2023)
SUBSETS = ("Train", "Validation", "Test")  # CVAT's own subset names; task id = position + 1
TIMESTAMP = "2024-03-01 12:00:00.000000+00:00"  # fixed, so the export's bytes depend on the flags only
MANIFEST = "demo_manifest.json"
DEFAULTS = {"num_images": 30, "size": 448, "colonies": 16, "seed": 0}


@dataclass(frozen=True)
class Look:
    """How one label looks: outline family, surface texture, two colours, size range and abundance."""

    shape: str  # round, lobed, branching, bumpy, oval, encrusting, plate
    texture: str  # branches, verrucae, smooth, granular, septa, ridges, meander, cells, pits, pores, polyps
    color: tuple[int, int, int]
    accent: tuple[int, int, int]
    radius_cm: tuple[float, float]
    weight: float = 1.0
    period_cm: float = 1.0


# The 16 finegrained genera, then the raw labels real projects hold besides them.
LOOKS: dict[str, Look] = {
    "Acanthastrea": Look("round", "cells", (80, 135, 85), (205, 95, 80), (5, 11), 1.0, 2.4),
    "Acropora": Look("branching", "branches", (150, 108, 88), (228, 205, 175), (8, 18), 3.0, 0.9),
    "Astreopora": Look("round", "pits", (208, 192, 160), (105, 90, 70), (6, 13), 1.0, 1.5),
    "Atrea": Look("lobed", "cells", (150, 98, 58), (205, 165, 112), (5, 11), 1.0, 0.8),
    "Fungia": Look("oval", "septa", (192, 162, 122), (115, 92, 68), (3, 6), 1.5, 1.0),
    "Goniastrea": Look("lobed", "cells", (118, 128, 78), (172, 162, 110), (6, 13), 1.0, 1.2),
    "Leptastrea": Look("encrusting", "cells", (78, 78, 52), (152, 142, 92), (4, 9), 1.0, 0.6),
    "Merulinidae": Look("lobed", "meander", (108, 140, 122), (202, 212, 172), (6, 13), 1.0, 1.1),
    "Millepora": Look("plate", "pores", (216, 190, 68), (246, 242, 222), (6, 13), 1.5, 0.7),
    "Montastrea": Look("round", "cells", (192, 118, 58), (236, 202, 150), (6, 13), 1.0, 2.0),
    "Montipora": Look("encrusting", "granular", (120, 88, 142), (172, 142, 192), (7, 16), 2.5, 0.3),
    "Other": Look("encrusting", "granular", (88, 110, 152), (162, 172, 204), (4, 10), 1.0, 0.6),
    "Pavona/Leptoseris": Look("plate", "ridges", (140, 130, 108), (188, 178, 150), (6, 14), 1.5, 1.0),
    "Pocillopora": Look("bumpy", "verrucae", (192, 118, 120), (238, 182, 172), (5, 12), 2.5, 1.2),
    "Porites": Look("lobed", "smooth", (202, 170, 88), (222, 196, 122), (8, 20), 3.0, 3.0),
    "Psammocora": Look("encrusting", "granular", (128, 118, 150), (98, 92, 120), (4, 9), 1.0, 0.25),
    "Pavona": Look("plate", "ridges", (150, 134, 108), (196, 182, 150), (6, 14), 0.7, 1.0),
    "Leptoseris": Look("plate", "ridges", (130, 126, 114), (180, 176, 158), (6, 14), 0.7, 1.0),
    "Corail mou": Look("lobed", "polyps", (140, 150, 70), (192, 202, 122), (6, 14), 1.0, 0.8),
    "Empty": Look("encrusting", "granular", (198, 192, 176), (168, 162, 148), (6, 14), 0.7, 0.5),
}
LABELS = tuple(LOOKS)


@dataclass(frozen=True)
class Colony:
    """One colony in quadrat coordinates (cm), with everything needed to draw and annotate it."""

    label: str
    center: tuple[float, float]
    radius: float
    aspect: float
    rotation: float
    lobes: tuple[tuple[int, float, float], ...]  # (harmonic, amplitude, phase) of the outline
    texture_seed: int
    confidence: int


@dataclass(frozen=True)
class QuadratPlan:
    """One image: its name, place, year, CVAT task and subset, and colonies bottom to top (z_order order)."""

    index: int
    site: str
    year: int
    quadrat: int
    subset: str
    colonies: tuple[Colony, ...]

    @property
    def name(self) -> str:
        return f"{self.site}_{self.year}_{self.quadrat:02d}.jpg"

    @property
    def task_id(self) -> int:
        return SUBSETS.index(self.subset) + 1


def image_place(index: int) -> tuple[str, int, int, int]:
    """(site, year, quadrat, group) of image `index`: years fastest, then sites, then quadrats."""
    group = index // len(YEARS)
    return SITES[group % len(SITES)], YEARS[index % len(YEARS)], group // len(SITES) + 1, group


def subset_of_group(group: int) -> str:
    """Every (site, quadrat) group in one subset: 3 of 5 in Train, 1 in Validation, 1 in Test."""
    return {1: "Validation", 3: "Test"}.get(group % 5, "Train")


def _outline_lobes(shape: str, rng: np.random.Generator) -> tuple[tuple[int, float, float], ...]:
    def phase() -> float:
        return float(rng.uniform(0, 2 * math.pi))

    lobes = [(h, float(rng.uniform(0, 0.05)), phase()) for h in (2, 3, 4)]
    if shape == "lobed":
        lobes.append((int(rng.integers(4, 7)), float(rng.uniform(0.12, 0.22)), phase()))
    elif shape == "bumpy":
        lobes.append((int(rng.integers(12, 17)), float(rng.uniform(0.05, 0.08)), phase()))
    elif shape == "branching":
        lobes.append((int(rng.integers(7, 11)), -1.0, phase()))  # amplitude -1 marks arms, see radial_profile
    elif shape == "encrusting":
        lobes += [(h, float(rng.uniform(0.08, 0.18)), phase()) for h in (2, 3, 5)]
    elif shape == "plate":
        lobes.append((int(rng.integers(8, 13)), float(rng.uniform(0.05, 0.09)), phase()))
    return tuple(lobes)


def radial_profile(lobes: tuple[tuple[int, float, float], ...], theta: np.ndarray) -> np.ndarray:
    """Outline radius (as a share of the colony radius) at each angle."""
    profile = np.ones_like(theta)
    for harmonic, amplitude, phase in lobes:
        if amplitude < 0:
            profile *= 0.45 + 0.55 * ((1 + np.cos(harmonic * theta + phase)) / 2) ** 1.5
        else:
            profile += amplitude * np.cos(harmonic * theta + phase)
    return np.clip(profile, 0.2, None)


def _new_colony(label: str, rng: np.random.Generator) -> Colony:
    look = LOOKS[label]
    aspect = {"oval": rng.uniform(1.4, 1.9), "plate": rng.uniform(1.8, 2.5), "encrusting": rng.uniform(1.1, 1.6)}.get(
        look.shape, rng.uniform(1.0, 1.2)
    )
    return Colony(
        label=label,
        center=(float(rng.uniform(0, QUADRAT_CM)), float(rng.uniform(0, QUADRAT_CM))),
        radius=float(rng.uniform(*look.radius_cm)),
        aspect=float(aspect),
        rotation=float(rng.uniform(0, math.pi)),
        lobes=_outline_lobes(look.shape, rng),
        texture_seed=int(rng.integers(0, 2**31)),
        confidence=int(rng.integers(60, 101)),
    )


def _random_label(rng: np.random.Generator) -> str:
    weights = np.array([LOOKS[label].weight for label in LABELS])
    return LABELS[int(rng.choice(len(LABELS), p=weights / weights.sum()))]


def plan_image(index: int, seed: int, colonies: int) -> QuadratPlan:
    """The colonies of image `index`: its quadrat's colonies (shared across years), grown, lost and recruited."""
    site, year, quadrat, group = image_place(index)
    group_rng = np.random.default_rng([seed, SITES.index(site), quadrat])
    base = [_new_colony(_random_label(group_rng), group_rng) for _ in range(max(1, colonies))]
    year_rng = np.random.default_rng([seed, SITES.index(site), quadrat, year])
    age = YEARS.index(year)
    kept = []
    for colony in base:
        if year_rng.random() < 0.08 * age:
            continue  # died since the first survey
        growth = 1 + 0.06 * age * year_rng.uniform(0.5, 1.5)
        drift = year_rng.normal(0, 0.5, size=2)
        kept.append(
            Colony(
                colony.label,
                (colony.center[0] + float(drift[0]), colony.center[1] + float(drift[1])),
                colony.radius * float(growth),
                colony.aspect,
                colony.rotation + float(year_rng.normal(0, 0.03)),
                colony.lobes,
                colony.texture_seed + year,
                int(np.clip(colony.confidence + year_rng.integers(-5, 6), 50, 100)),
            )
        )
    kept += [_new_colony(_random_label(year_rng), year_rng) for _ in range(int(year_rng.integers(0, 3)) if age else 0)]
    kept.sort(key=lambda c: -c.radius * math.sqrt(c.aspect))  # big colonies first: the small ones grow over them
    return QuadratPlan(index, site, year, quadrat, subset_of_group(group), tuple(kept))


def outline(colony: Colony, px_per_cm: float, vertices: int = 64) -> np.ndarray:
    """The colony's outline in pixels, (N, 2), vertices evenly spaced in angle."""
    if colony.lobes and any(a < 0 for _, a, _ in colony.lobes):
        vertices *= 2  # arms need more points
    theta = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    rho = colony.radius * radial_profile(colony.lobes, theta)
    x = rho * np.cos(theta) * math.sqrt(colony.aspect)
    y = rho * np.sin(theta) / math.sqrt(colony.aspect)
    cos, sin = math.cos(colony.rotation), math.sin(colony.rotation)
    points = np.stack([colony.center[0] + x * cos - y * sin, colony.center[1] + x * sin + y * cos], axis=1)
    return points * px_per_cm


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `cell_px` pixels wide."""
    h, w = shape
    grid = rng.random((max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def substrate(rng: np.random.Generator, size: int, px_per_cm: float) -> np.ndarray:
    """Sand and rubble: several octaves of noise between a pale and a dark tone, float RGB in [0, 255]."""
    coarse = _value_noise(rng, (size, size), 12 * px_per_cm)
    medium = _value_noise(rng, (size, size), 3 * px_per_cm)
    grain = rng.random((size, size), dtype=np.float32)
    t = (0.5 * coarse + 0.3 * medium + 0.2 * grain)[..., None]
    pale, dark = np.array([196, 188, 166], np.float32), np.array([112, 112, 100], np.float32)
    rubble = (medium > 0.72)[..., None] * 0.12
    return (pale * (1 - t) + dark * t) * (1 - rubble)


def surface(
    look: Look,
    u: np.ndarray,
    v: np.ndarray,
    rn: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
    px_per_cm: float,
) -> np.ndarray:
    """Texture value in [0, 1] (0 = colour, 1 = accent) for colony-frame coordinates u, v in cm."""
    p = look.period_cm
    warp = _value_noise(rng, u.shape, 2 * px_per_cm) - 0.5
    if look.texture in ("cells", "pits", "verrucae", "pores", "polyps"):
        k = 4 * math.pi / (math.sqrt(3) * p)
        waves = [
            np.cos(k * (u * math.cos(a) + v * math.sin(a)) + 0.6 * warp) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)
        ]
        hexes = waves[0] + waves[1] + waves[2]
        cell = (hexes + 1.5) / 4.5  # 1 at corallite centres, 0 on the walls
        textures: dict[str, np.ndarray] = {
            "cells": cell**2,
            "pits": (cell > 0.8).astype(np.float32),
            "verrucae": (cell > 0.65).astype(np.float32),
            "pores": np.maximum((cell > 0.9).astype(np.float32), (rn > 0.85).astype(np.float32)),
            "polyps": np.clip(cell * 1.3 - 0.2 + 0.3 * warp, 0, 1),
        }
        return textures[look.texture]
    if look.texture == "branches":
        return 0.5 + 0.5 * np.sin(2 * math.pi * (rn * 6 + 0.4 * np.sin(12 * theta)) + 2 * warp) * (0.4 + 0.6 * rn)
    if look.texture == "septa":
        return (0.5 + 0.5 * np.cos(48 * theta + 1.5 * warp)) * (rn > 0.12)
    if look.texture == "ridges":
        return 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(u, v) / p + 3 * warp)
    if look.texture == "meander":
        return (0.5 + 0.5 * np.sin(2 * math.pi * u / p + 9 * warp)) ** 2
    if look.texture == "smooth":
        return 0.35 * _value_noise(rng, u.shape, p * px_per_cm) + 0.1 * rng.random(u.shape, dtype=np.float32)
    grain = _value_noise(rng, u.shape, max(1.0, p * px_per_cm))
    return (grain > 0.5).astype(np.float32) * 0.8 + 0.2 * rng.random(u.shape, dtype=np.float32)


def draw_colony(canvas: np.ndarray, colony: Colony, px_per_cm: float) -> None:
    """Paint one colony over `canvas` (float RGB): shadow, textured dome-shaded body, darker rim."""
    size = canvas.shape[0]
    points = outline(colony, px_per_cm)
    shadow_px, blur = int(round(0.6 * px_per_cm)), max(0.5, 0.4 * px_per_cm)
    pad = shadow_px + math.ceil(3 * blur) + 2  # room for the whole blurred shadow, so it never ends in a straight edge
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad
    bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if bx0 >= bx1 or by0 >= by1:
        return
    h, w = by1 - by0, bx1 - bx0
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round((points - [bx0, by0]) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    region = canvas[by0:by1, bx0:bx1]
    if 0 < shadow_px < min(h, w):
        shadow = np.zeros((h, w), np.float32)
        shadow[shadow_px:, shadow_px:] = mask[: h - shadow_px, : w - shadow_px]
        region *= 1 - 0.3 * cv2.GaussianBlur(shadow, (0, 0), blur)[..., None]

    ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
    cos, sin = math.cos(colony.rotation), math.sin(colony.rotation)
    du, dv = xs / px_per_cm - colony.center[0], ys / px_per_cm - colony.center[1]
    u, v = du * cos + dv * sin, -du * sin + dv * cos
    su, sv = u / math.sqrt(colony.aspect), v * math.sqrt(colony.aspect)
    theta = np.arctan2(sv, su)
    rn = np.clip(np.hypot(su, sv) / (colony.radius * radial_profile(colony.lobes, theta)), 0, 1)

    look = LOOKS[colony.label]
    rng = np.random.default_rng(colony.texture_seed)
    tint = rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    t = np.clip(surface(look, u, v, rn, theta, rng, px_per_cm), 0, 1)[..., None]
    color = (np.array(look.color, np.float32) * (1 - t) + np.array(look.accent, np.float32) * t) * tint
    dome = 0.72 + 0.28 * np.sqrt(1 - rn**2)[..., None]
    body = mask.astype(bool)
    rim = body & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    region[body] = (color * dome)[body]
    region[rim] *= 0.7


def render(plan: QuadratPlan, size: int, seed: int) -> np.ndarray:
    """The quadrat photo as uint8 RGB: substrate, colonies bottom to top, then an underwater colour cast."""
    px_per_cm = size / QUADRAT_CM
    rng = np.random.default_rng([seed, plan.index, 7])
    canvas = substrate(rng, size, px_per_cm)
    for colony in plan.colonies:
        draw_colony(canvas, colony, px_per_cm)
    cast = np.array(
        [rng.uniform(0.86, 0.95), rng.uniform(0.98, 1.03), rng.uniform(1.0, 1.08)], np.float32
    ) * rng.uniform(0.92, 1.05)
    return np.clip(canvas * cast + rng.normal(0, 3, canvas.shape).astype(np.float32), 0, 255).astype(np.uint8)


def _clamped_outline(colony: Colony, size: int) -> np.ndarray | None:
    """The outline as CVAT stores it: inside the image, two decimals; None if too little is left."""
    polygon = (
        Polygon(outline(colony, size / QUADRAT_CM))
        .buffer(0)
        .intersection(Polygon([(0, 0), (size, 0), (size, size), (0, size)]))
    )
    if polygon.is_empty or polygon.area < 4:
        return None
    if polygon.geom_type != "Polygon":
        polygon = max(polygon.geoms, key=lambda g: g.area)
    return np.round(np.asarray(polygon.exterior.coords)[:-1], 2)


def annotations_xml(plans: list[QuadratPlan], size: int) -> str:
    """annotations.xml of a CVAT project export holding `plans`, one task per subset."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<annotations>",
        "  <version>1.1</version>",
        "  <meta>",
        "    <project>",
        "      <id>1</id>",
        f"      <name>{PROJECT_NAME}</name>",
        f"      <created>{TIMESTAMP}</created>",
        f"      <updated>{TIMESTAMP}</updated>",
        "      <labels>",
    ]
    for label, look in LOOKS.items():
        lines += [
            "        <label>",
            f"          <name>{_escape(label)}</name>",
            "          <color>#{:02x}{:02x}{:02x}</color>".format(*look.color),
            "          <type>any</type>",
            "          <attributes>",
            "            <attribute>",
            "              <name>confidence</name>",
            "              <mutable>False</mutable>",
            "              <input_type>number</input_type>",
            "              <default_value>100</default_value>",
            "              <values>0\n100\n1</values>",
            "            </attribute>",
            "          </attributes>",
            "        </label>",
        ]
    lines += ["      </labels>", "      <tasks>"]
    for task_id, subset in enumerate(SUBSETS, start=1):
        count = sum(p.subset == subset for p in plans)
        lines += [
            "        <task>",
            f"          <id>{task_id}</id>",
            f"          <name>quadrats {subset.lower()}</name>",
            f"          <size>{count}</size>",
            "          <mode>annotation</mode>",
            "          <overlap>0</overlap>",
            f"          <created>{TIMESTAMP}</created>",
            f"          <updated>{TIMESTAMP}</updated>",
            f"          <subset>{subset}</subset>",
            "          <start_frame>0</start_frame>",
            f"          <stop_frame>{max(count - 1, 0)}</stop_frame>",
            "        </task>",
        ]
    lines += ["      </tasks>", "    </project>", f"    <dumped>{TIMESTAMP}</dumped>", "  </meta>"]
    for frame, plan in enumerate(sorted(plans, key=lambda p: (p.task_id, p.index))):
        lines.append(
            f'  <image id="{frame}" name={quoteattr(plan.name)} subset="{plan.subset}" task_id="{plan.task_id}" width="{size}" height="{size}">'
        )
        annotated = _annotated(plan, size)
        for z_order, (colony, points) in enumerate(annotated):
            occluded = int(_is_occluded(annotated, z_order))
            text = ";".join(f"{x:.2f},{y:.2f}" for x, y in points)
            lines += [
                f'    <polygon label={quoteattr(colony.label)} source="manual" occluded="{occluded}" points="{text}" z_order="{z_order}">',
                f'      <attribute name="confidence">{colony.confidence}</attribute>',
                "    </polygon>",
            ]
        lines.append("  </image>")
    lines.append("</annotations>")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _annotated(plan: QuadratPlan, size: int) -> list[tuple[Colony, np.ndarray]]:
    """The colonies visible in the image with their clamped outlines, bottom to top."""
    return [(c, points) for c in plan.colonies if (points := _clamped_outline(c, size)) is not None]


def _is_occluded(annotated: list[tuple[Colony, np.ndarray]], z_order: int) -> bool:
    """Whether a colony drawn above this one covers part of it (CVAT's `occluded` flag)."""
    below = Polygon(annotated[z_order][1]).buffer(0)
    return any(below.intersects(Polygon(points).buffer(0)) for _, points in annotated[z_order + 1 :])


def _check_manifest(output: Path, flags: dict[str, int]) -> None:
    path = output / MANIFEST
    if path.is_file():
        made = json.loads(path.read_text())
        different = {k: made.get(k) for k in ("size", "colonies", "seed") if made.get(k) != flags[k]}
        if different:
            raise UserError(
                f"{output} holds demo data made with other flags {different}; choose another --output or remove that folder"
            )
    write_text_atomic(path, json.dumps({k: flags[k] for k in ("size", "colonies", "seed")}, indent=2) + "\n")


def default_output(data_root: Path) -> Path:
    """Where the demo export goes unless told otherwise: <DATA_ROOT>/demo/cvat_export."""
    return Path(data_root) / "demo" / "cvat_export"


def make_demo_export(output: Path, num_images: int = 30, size: int = 448, colonies: int = 16, seed: int = 0) -> Path:
    """Write (or complete) the synthetic project export in `output`; returns `output`."""
    if num_images < 1 or size < 64 or colonies < 1:
        raise UserError("use --num-images >= 1, --size >= 64 and --colonies >= 1")
    output = Path(output)
    _check_manifest(output, {"size": size, "colonies": colonies, "seed": seed})
    plans = [plan_image(i, seed, colonies) for i in range(num_images)]
    for plan in progress(plans, desc="demo images", unit="img"):
        path = output / "images" / plan.subset / plan.name
        if path.is_file():
            continue
        with atomic_path(path) as tmp:
            Image.fromarray(render(plan, size, seed)).save(tmp, format="JPEG", quality=90)
    write_text_atomic(output / "annotations.xml", annotations_xml(plans, size))
    return output


def make_demo_photos(output: Path, num_images: int, size: int, colonies: int, seed: int) -> Path:
    """Write (or complete) quadrat photos alone, no annotations: a survey nobody annotated yet."""
    if num_images < 1 or size < 64 or colonies < 1:
        raise UserError("use --num-images >= 1, --size >= 64 and --colonies >= 1")
    output = Path(output)
    for plan in progress([plan_image(i, seed, colonies) for i in range(num_images)], desc="demo photos", unit="img"):
        path = output / plan.name
        if not path.is_file():
            with atomic_path(path) as tmp:
                Image.fromarray(render(plan, size, seed)).save(tmp, format="JPEG", quality=90)
    return output


def make_demo_data(
    output: str | None = None,
    num_images: int = DEFAULTS["num_images"],
    size: int = DEFAULTS["size"],
    colonies: int = DEFAULTS["colonies"],
    seed: int = DEFAULTS["seed"],
    photos_only: bool = False,
) -> None:
    """Generate the synthetic CVAT-for-images 1.1 project export of reef quadrats.

    Args:
        output: the export folder (default: <DATA_ROOT>/demo/cvat_export).
        num_images: how many quadrat photos.
        size: image width and height in pixels (1920 for benchmarks).
        colonies: colonies per quadrat at the first survey (45 for benchmarks at 1920).
        seed: the random seed; the same flags always give the same bytes.
        photos_only: write only the photos, flat in the folder and never annotated (a new survey to predict).
    """
    settings = load_settings()
    if photos_only:
        if not output:
            raise UserError("--photos-only needs --output, the folder for the new survey's photos")
        folder = make_demo_photos(Path(output), int(num_images), int(size), int(colonies), int(seed))
        print(f"demo survey photos: {folder} ({num_images} images of {size}x{size}, no annotations)")
        return
    target = Path(output) if output else default_output(settings.data_root)
    make_demo_export(target, int(num_images), int(size), int(colonies), int(seed))
    counts = {s: sum(subset_of_group(image_place(i)[3]) == s for i in range(int(num_images))) for s in SUBSETS}
    print(
        f"demo export: {target} ({num_images} images of {size}x{size}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + ")"
    )
    print(f"import it: python data_engineering/import_cvat_export.py {target} --dataset-name {settings.demo_dataset}")


def main() -> None:
    """Entry point of data_engineering/make_demo_data.py."""
    run(make_demo_data)
