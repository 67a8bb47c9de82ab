"""The survey report: every file written, its numbers equal to the ecology functions', plots readable."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from evaluate.ecology import ColonySize, QuadratSummary
from evaluate.survey_report import SURVEY_FILES, write_survey_report

NAMES = ["background", "Acropora", "Porites"]
PALETTE = [(0, 0, 0), (60, 180, 75), (230, 25, 75)]


def quadrats(shift: float) -> list[QuadratSummary]:
    out = []
    for site in ("A", "B"):
        for year in (2020, 2021, 2022):
            for q in range(3):
                acro = 20 + shift + 5 * (year - 2020) + q
                cover = np.array([100 - acro - 10, acro, 10.0])
                colonies = [ColonySize(1, 10.0 ** (1 + q), 12.0), ColonySize(2, 50.0, 30.0)]
                out.append(QuadratSummary(f"{site}_{year}_{q}", site, year, cover, colonies))
    return out


def read_csv(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_prediction_and_ground_truth_side_by_side(tmp_path):
    written = write_survey_report({"ground truth": quadrats(0), "prediction": quadrats(3)}, NAMES, PALETTE, tmp_path)
    assert [p.name for p in written] == list(SURVEY_FILES) and all(p.is_file() for p in written)
    site_year = read_csv(tmp_path / "site_year.csv")
    assert len(site_year) == 2 * 2 * 3 * 4  # sources x sites x years x (classes + all coral)
    row = next(
        r
        for r in site_year
        if r["source"] == "prediction" and r["site"] == "B" and r["year"] == "2021" and r["class"] == "Acropora"
    )
    assert float(row["mean_cover"]) == pytest.approx(20 + 3 + 5 + 1)  # mean of 28, 29, 30
    assert float(row["cover_ci_low"]) >= 28 and float(row["cover_ci_high"]) <= 30
    assert row["quadrats"] == "3" and row["colonies"] == "3" and float(row["density_per_m2"]) == pytest.approx(1.0)
    sizes = read_csv(tmp_path / "size_frequency.csv")
    acro = [r for r in sizes if r["source"] == "ground truth" and r["class"] == "Acropora"]
    assert sum(int(r["colonies"]) for r in acro) == 18
    assert len(read_csv(tmp_path / "cover.csv")) == 2 * 18 * 3
    assert len(read_csv(tmp_path / "colonies.csv")) == 2 * 18 * 2
    markdown = (tmp_path / "survey.md").read_text()
    assert (
        "## ground truth" in markdown
        and "## prediction" in markdown
        and "| B | 2021 | Acropora | 3 | 29.00 |" in markdown
    )
    for plot in ("cover_by_year.png", "size_frequency.png"):
        image = np.asarray(Image.open(tmp_path / plot).convert("RGB"))
        assert image.shape[0] > 200 and (image == PALETTE[1]).all(axis=-1).sum() > 50  # the genus drawn in its colour


def test_quadrats_without_site_or_year(tmp_path):
    unnamed = [QuadratSummary("IMG_1.jpg", None, None, np.array([50.0, 50.0, 0.0]), [])]
    write_survey_report({"prediction": unnamed}, NAMES, PALETTE, tmp_path)
    rows = read_csv(tmp_path / "site_year.csv")
    assert {r["site"] for r in rows} == {""} and rows[1]["mean_cover"] == "50.0" and rows[3]["class"] == "all coral"


def test_site_year_table_for_people():
    from evaluate.ecology import site_year_summary
    from evaluate.survey_report import format_site_year_table

    text = format_site_year_table(site_year_summary(quadrats(0), NAMES))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["site", "year", "quadrats"] and len(lines) == 2 + 6
    assert "Acropora 26.0, Porites 10.0" in next(line for line in lines if line.startswith("B ") and "2021" in line)
