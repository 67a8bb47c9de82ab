"""What reef ecologists publish, from class-index masks and colony outlines (pure numpy / shapely).

Percent cover per quadrat and genus, its mean per site and year with a bootstrap interval over
quadrats, colony counts, density and sizes in cm², and size-frequency on log bins:

    scale = QuadratScale.parse("1x1")                        # the ground a quadrat photo covers, in metres
    cover = image_cover(mask, num_classes)                   # [K] percent of labelled pixels
    sizes = colony_sizes(colonies, mask.shape, scale)        # area cm², perimeter cm per colony
    rows = site_year_summary(quadrats, class_names)          # one row per site x year x class
    counts = size_frequency([c.area_cm2 for c in sizes], log_bins())
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon

from common.cli import UserError
from common.labels import IGNORE_INDEX

BOOTSTRAP_SAMPLES = 2000
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:[x×]\s*([0-9]*\.?[0-9]+))?\s*(m|cm)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class QuadratScale:
    """The ground a quadrat photo covers, so pixels become centimetres (1 m x 1 m by default)."""

    width_m: float = 1.0
    height_m: float = 1.0

    @classmethod
    def parse(cls, text: str | float) -> QuadratScale:
        """`1`, `1x1`, `0.5x0.5 m`, `50x50cm` -> a scale; one number means a square quadrat."""
        match = _SIZE.match(str(text))
        if not match:
            raise UserError(f"quadrat size {text!r} is not WIDTHxHEIGHT in m or cm; write e.g. 1x1 or 50x50cm")
        width, height = float(match.group(1)), float(match.group(2) or match.group(1))
        if (match.group(3) or "m").lower() == "cm":
            width, height = width / 100, height / 100
        if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
            raise UserError(f"quadrat size {text!r} must be positive; write e.g. 1x1")
        return cls(width, height)

    @property
    def area_m2(self) -> float:
        return self.width_m * self.height_m

    def fits(self, image_height: int, image_width: int, tolerance: float = 0.02) -> bool:
        """Whether an image has the quadrat's proportions (width / height within `tolerance`), so pixels are square."""
        return abs((image_width / image_height) / (self.width_m / self.height_m) - 1) <= tolerance

    def cm_per_pixel(self, image_height: int, image_width: int) -> tuple[float, float]:
        """Centimetres per pixel along x and y for an image of that size."""
        return self.width_m * 100 / image_width, self.height_m * 100 / image_height


@dataclass(frozen=True)
class ColonySize:
    """One colony's class and size on the reef."""

    class_index: int
    area_cm2: float
    perimeter_cm: float


@dataclass
class QuadratSummary:
    """One photographed quadrat: where and when, cover per class (percent) and its colonies."""

    image: str
    site: str | None
    year: int | None
    cover: np.ndarray  # [K] percent of labelled pixels
    colonies: list[ColonySize] = field(default_factory=list)
    area_m2: float = 1.0


def image_cover(mask: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Percent cover of each class over the labelled pixels of one mask (zeros where none is labelled)."""
    values = mask[mask != ignore_index].ravel()
    if values.size and int(values.max()) >= num_classes:
        raise ValueError(f"mask holds class {int(values.max())}, more than the {num_classes} classes")
    counts = np.bincount(values, minlength=num_classes).astype(np.float64)
    return counts / counts.sum() * 100 if counts.sum() else counts


def colony_sizes(
    colonies: Iterable[tuple[int, Polygon]], image_shape: tuple[int, int], scale: QuadratScale
) -> list[ColonySize]:
    """Area (cm²) and perimeter (cm) of each `(class_index, outline in pixels)` on a quadrat of `scale`.

    The outlines are scaled per axis before measuring, so non-square pixels give exact areas and perimeters;
    all of a photo's outlines in one call (a poor prediction has thousands).
    """
    pairs = list(colonies)
    if not pairs:
        return []
    x_cm, y_cm = scale.cm_per_pixel(*image_shape)
    ground = shapely.transform(np.array([p for _, p in pairs], dtype=object), lambda xy: xy * (x_cm, y_cm))
    return [
        ColonySize(int(c), float(a), float(length))
        for (c, _), a, length in zip(pairs, shapely.area(ground), shapely.length(ground))
    ]


def measure_quadrat(
    image: str,
    site: str | None,
    year: int | None,
    mask: np.ndarray,
    colonies: Iterable[tuple[int, Polygon]],
    num_classes: int,
    scale: QuadratScale,
) -> QuadratSummary:
    """The survey numbers of one quadrat: cover from its class mask, sizes of its `(class index, outline)` colonies."""
    return QuadratSummary(
        image, site, year, image_cover(mask, num_classes), colony_sizes(colonies, mask.shape, scale), scale.area_m2
    )


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of `values` with a percentile bootstrap interval (resampling the values, i.e. the quadrats).

    One value gives an interval of zero width around it: there is nothing to resample.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


@dataclass(frozen=True)
class SiteYearRow:
    """One site x year x class of a survey (the columns of `site_year.csv`)."""

    site: str | None
    year: int | None
    class_name: str
    quadrats: int
    mean_cover: float
    cover_ci_low: float
    cover_ci_high: float
    colonies: int
    density_per_m2: float
    mean_colony_area_cm2: float | None
    median_colony_area_cm2: float | None


ALL_CORAL = "all coral"  # the extra row of every site and year: cover of every class but background together


def site_year_summary(
    quadrats: Sequence[QuadratSummary], class_names: Sequence[str], seed: int = 0
) -> list[SiteYearRow]:
    """One row per site x year x class, and one for all coral: quadrats, mean cover with its 95% bootstrap
    interval over quadrats, colonies. Class 0 is background.

    Quadrats without a site or year (file names that do not follow the pattern) are grouped under None.
    """
    groups: dict[tuple[str, int], list[QuadratSummary]] = {}
    for quadrat in quadrats:
        groups.setdefault((quadrat.site or "", quadrat.year or 0), []).append(quadrat)
    rows: list[SiteYearRow] = []
    for (site, year), members in sorted(groups.items()):
        covers = np.stack([q.cover for q in members])
        covers = np.concatenate([covers, covers[:, 1:].sum(axis=1, keepdims=True)], axis=1)  # + all coral
        area = sum(q.area_m2 for q in members)
        for index, name in enumerate([*class_names, ALL_CORAL]):
            mean, low, high = bootstrap_mean(covers[:, index], seed=seed)
            wanted = range(1, len(class_names)) if name == ALL_CORAL else (index,)
            sizes = [c.area_cm2 for q in members for c in q.colonies if c.class_index in wanted]
            rows.append(
                SiteYearRow(
                    site or None,
                    year or None,
                    name,
                    len(members),
                    mean,
                    low,
                    high,
                    len(sizes),
                    len(sizes) / area if area else math.nan,
                    float(np.mean(sizes)) if sizes else None,
                    float(np.median(sizes)) if sizes else None,
                )
            )
    return rows


def log_bins(min_cm2: float = 1.0, max_cm2: float = 1e5, per_decade: int = 4) -> np.ndarray:
    """Bin edges in cm² spaced evenly on a log scale, as coral size-frequency plots use."""
    decades = math.log10(max_cm2 / min_cm2)
    return np.logspace(math.log10(min_cm2), math.log10(max_cm2), int(round(decades * per_decade)) + 1)


def size_frequency(areas_cm2: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """Colony counts per size bin; colonies below the first edge land in the first bin, above the last in the last."""
    clipped = np.clip(np.asarray(areas_cm2, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts
