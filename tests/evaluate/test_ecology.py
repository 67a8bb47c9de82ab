"""Cover, colony sizes in cm², bootstrap intervals and size-frequency: exact values on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from common.cli import UserError
from evaluate.ecology import (
    ColonySize,
    QuadratScale,
    QuadratSummary,
    bootstrap_mean,
    colony_sizes,
    image_cover,
    log_bins,
    site_year_summary,
    size_frequency,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", (1.0, 1.0)), ("1x1", (1.0, 1.0)), ("0.5x0.25 m", (0.5, 0.25)), ("50x50cm", (0.5, 0.5)), (2, (2.0, 2.0))],
)
def test_quadrat_scale_parses_sizes(text, expected):
    scale = QuadratScale.parse(text)
    assert (scale.width_m, scale.height_m) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "ax1", "0x1", "1x1 km", "-1"])
def test_quadrat_scale_refuses_nonsense(text):
    with pytest.raises(UserError):
        QuadratScale.parse(text)


def test_image_cover_counts_labelled_pixels_only():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:5] = 1  # 50 px
    mask[5:, :5] = 2  # 25 px
    mask[5:, 5:] = 255  # 25 px ignored
    assert image_cover(mask, 3) == pytest.approx([0.0, 200 / 3, 100 / 3])
    assert image_cover(np.full((4, 4), 255, np.uint8), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        image_cover(np.full((2, 2), 7, np.uint8), 3)


def test_colony_sizes_in_square_and_oblong_quadrats():
    square = box(0, 0, 192, 192)  # a tenth of a 1920-px side
    (one,) = colony_sizes([(3, square)], (1920, 1920), QuadratScale(1, 1))
    assert (one.class_index, one.area_cm2, one.perimeter_cm) == (3, pytest.approx(100.0), pytest.approx(40.0))
    (oblong,) = colony_sizes([(1, square)], (1920, 1920), QuadratScale(1, 0.5))
    assert oblong.area_cm2 == pytest.approx(50.0) and oblong.perimeter_cm == pytest.approx(30.0)
    triangle = Polygon([(0, 0), (960, 0), (0, 960)])  # half a 0.5 m x 0.5 m corner
    (tri,) = colony_sizes([(2, triangle)], (1920, 1920), QuadratScale(1, 1))
    assert tri.area_cm2 == pytest.approx(1250.0)
    assert tri.perimeter_cm == pytest.approx(100 + 50 * math.sqrt(2))


def test_bootstrap_interval():
    assert bootstrap_mean([4.0]) == (4.0, 4.0, 4.0)
    assert bootstrap_mean([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_mean([]))
    values = np.random.default_rng(1).normal(30, 6, size=40)
    mean, low, high = bootstrap_mean(values, seed=3)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    normal_width = 2 * 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert high - low == pytest.approx(normal_width, rel=0.2)
    assert bootstrap_mean(values, seed=3) == (mean, low, high)  # seeded: the same table on every run


def test_site_year_summary_groups_and_densities():
    def quadrat(site, year, cover, areas):
        return QuadratSummary(
            f"{site}_{year}", site, year, np.array(cover, float), [ColonySize(1, a, 1.0) for a in areas]
        )

    rows = site_year_summary(
        [quadrat("A", 2020, [90, 10], [5, 15]), quadrat("A", 2020, [70, 30], [10]), quadrat("B", 2021, [100, 0], [])],
        ["background", "Acropora"],
    )
    by_key = {(r.site, r.year, r.class_name): r for r in rows}
    assert len(rows) == 6  # 2 site-years x (2 classes + all coral)
    acro = by_key[("A", 2020, "Acropora")]
    assert acro.quadrats == 2 and acro.mean_cover == pytest.approx(20.0)
    assert acro.cover_ci_low >= 10 and acro.cover_ci_high <= 30
    assert acro.colonies == 3 and acro.density_per_m2 == pytest.approx(1.5)
    assert acro.mean_colony_area_cm2 == pytest.approx(10.0) and acro.median_colony_area_cm2 == pytest.approx(10.0)
    total = by_key[("A", 2020, "all coral")]
    assert total.mean_cover == pytest.approx(20.0) and total.colonies == 3
    empty = by_key[("B", 2021, "Acropora")]
    assert empty.colonies == 0 and empty.mean_colony_area_cm2 is None and empty.mean_cover == 0.0


def test_size_frequency_on_log_bins():
    edges = log_bins(1, 1e4, per_decade=2)
    assert len(edges) == 9 and edges[0] == pytest.approx(1) and edges[-1] == pytest.approx(1e4)
    assert np.diff(np.log10(edges)) == pytest.approx([0.5] * 8)
    counts = size_frequency([0.2, 1.5, 5.0, 50, 9999, 1e6], edges)
    assert counts.sum() == 6
    assert counts[0] == 2 and counts[1] == 1 and counts[3] == 1 and counts[-1] == 2  # below/above clip to the ends


def test_quadrat_scale_says_which_photos_fit_it():
    square, oblong = QuadratScale.parse("1x1"), QuadratScale.parse("100x75cm")
    assert square.fits(1920, 1920) and square.fits(1900, 1920) and not square.fits(1440, 1920)
    assert oblong.fits(1440, 1920) and not oblong.fits(1920, 1920) and not oblong.fits(1920, 1440)


def test_colony_sizes_of_many_outlines_at_once_keep_their_order():
    outlines = [(3, box(0, 0, 192, 192)), (2, Polygon([(0, 0), (960, 0), (0, 960)])), (1, box(10, 10, 30, 20))]
    together = colony_sizes(outlines, (1920, 1920), QuadratScale(1, 0.5))
    alone = [colony_sizes([o], (1920, 1920), QuadratScale(1, 0.5))[0] for o in outlines]
    assert together == alone and [s.class_index for s in together] == [3, 2, 1]
    assert colony_sizes([], (1920, 1920), QuadratScale(1, 1)) == []
