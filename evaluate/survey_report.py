"""The survey report: cover per quadrat and genus, site x year means, colony sizes, and their plots.

    write_survey_report({"prediction": quadrats}, class_names, palette, out_dir)
    write_survey_report({GROUND_TRUTH: gt, "prediction": predicted}, ...)   # an evaluated split, side by side
    section = write_split_survey(gt, predicted, class_names, palette, out_dir / SPLIT_SURVEY_DIR)  # + the pairs

Every table has a `source` column, so ground truth and prediction of the same quadrats sit in one
file and one plot (ground truth dashed), and a reader sees how far the model's cover trend and size
structure are from the annotators'. Background is left out of the plots (it is not a genus).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from common.fileio import write_text_atomic
from common.table import format_table
from evaluate.ecology import (
    ALL_CORAL,
    QuadratSummary,
    SiteYearRow,
    bootstrap_mean,
    log_bins,
    site_year_summary,
    size_frequency,
)
from evaluate.reports import save_figure

GROUND_TRUTH = "ground truth"  # the source drawn dashed, beside the prediction's solid lines
PREDICTION = "prediction"
SPLIT_SURVEY_DIR = "survey"  # under an evaluation's folder: the survey numbers of its quadrats, both sources
SURVEY_FILES = (
    "cover.csv",
    "site_year.csv",
    "colonies.csv",
    "size_frequency.csv",
    "cover_by_year.png",
    "size_frequency.png",
    "survey.md",
)


def _csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(["" if v is None else round(v, 4) if isinstance(v, float) else v for v in row] for row in rows)
    return buffer.getvalue()


def _style(source: str) -> str:
    return "--" if source == GROUND_TRUTH else "-"


def _genera(class_names: Sequence[str]) -> list[int]:
    """Indices of the classes that are genera (background, index 0, is not)."""
    return list(range(1, len(class_names)))


def cover_rows(sources: Mapping[str, Sequence[QuadratSummary]], class_names: Sequence[str]) -> list[list[object]]:
    return [
        [source, q.image, q.site, q.year, class_names[i], float(q.cover[i])]
        for source, quadrats in sources.items()
        for q in quadrats
        for i in range(len(class_names))
    ]


def colony_rows(sources: Mapping[str, Sequence[QuadratSummary]], class_names: Sequence[str]) -> list[list[object]]:
    return [
        [source, q.image, q.site, q.year, class_names[c.class_index], c.area_cm2, c.perimeter_cm]
        for source, quadrats in sources.items()
        for q in quadrats
        for c in q.colonies
    ]


def size_frequency_rows(
    sources: Mapping[str, Sequence[QuadratSummary]], class_names: Sequence[str], edges: np.ndarray
) -> list[list[object]]:
    rows: list[list[object]] = []
    for source, quadrats in sources.items():
        for index in _genera(class_names):
            areas = [c.area_cm2 for q in quadrats for c in q.colonies if c.class_index == index]
            for low, high, count in zip(edges[:-1], edges[1:], size_frequency(areas, edges)):
                rows.append([source, class_names[index], float(low), float(high), int(count)])
    return rows


def _cover_plot(
    summaries: Mapping[str, list[SiteYearRow]], class_names: Sequence[str], palette: Sequence[Sequence[int]], path: Path
) -> None:
    """Mean cover per genus over the years, one panel per site, with the 95% interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = sorted({str(r.site) for rows in summaries.values() for r in rows})
    fig, axes = plt.subplots(1, len(sites), figsize=(5 * len(sites) + 2, 4), squeeze=False, sharey=True)
    for ax, site in zip(axes[0], sites):
        for source, rows in summaries.items():
            for index in _genera(class_names):
                points = sorted(
                    (r.year, r.mean_cover, r.cover_ci_low, r.cover_ci_high)
                    for r in rows
                    if str(r.site) == site and r.class_name == class_names[index] and r.year is not None
                )
                if not points or max(p[1] for p in points) <= 0:
                    continue
                years, means, lows, highs = (np.array(v, dtype=float) for v in zip(*points))
                colour = tuple(c / 255 for c in palette[index])
                ax.errorbar(
                    years,
                    means,
                    yerr=[means - lows, highs - means],
                    fmt=_style(source),
                    marker="o",
                    capsize=3,
                    color=colour,
                    label=f"{class_names[index]} ({source})",
                )
        ax.set_title(f"site {site}")
        ax.set_xlabel("year")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].set_ylabel("mean cover % (95% bootstrap interval over quadrats)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    save_figure(fig, path)


def _size_plot(
    sources: Mapping[str, Sequence[QuadratSummary]],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    edges: np.ndarray,
    path: Path,
) -> None:
    """Size-frequency per genus on log-spaced bins (colony counts against area in cm², log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    genera = [
        i
        for i in _genera(class_names)
        if any(c.class_index == i for qs in sources.values() for q in qs for c in q.colonies)
    ]
    columns = min(4, max(1, len(genera)))
    rows_n = max(1, math.ceil(len(genera) / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.6 * columns, 2.8 * rows_n), squeeze=False)
    centres = np.sqrt(edges[:-1] * edges[1:])
    for ax, index in zip(axes.ravel(), genera):
        colour = tuple(c / 255 for c in palette[index])
        for source, quadrats in sources.items():
            counts = size_frequency([c.area_cm2 for q in quadrats for c in q.colonies if c.class_index == index], edges)
            ax.step(centres, counts, where="mid", linestyle=_style(source), color=colour, label=source)
        ax.set_xscale("log")
        ax.set_title(class_names[index], fontsize=9)
        ax.set_xlabel("colony area (cm²)", fontsize=8)
        ax.set_ylabel("colonies", fontsize=8)
        if len(sources) > 1:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(genera) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def _markdown(summaries: Mapping[str, list[SiteYearRow]], class_names: Sequence[str]) -> str:
    lines = [
        "# Survey report",
        "",
        "Mean cover per site, year and genus over quadrats, with the 95% bootstrap interval "
        "over quadrats; colony density per m² of photographed quadrat.",
        "",
    ]
    for source, rows in summaries.items():
        lines += [
            f"## {source}",
            "",
            "| site | year | genus | quadrats | mean cover % | 95% interval | colonies | per m² |",
            "|---|---|---|---:|---:|---|---:|---:|",
        ]
        for r in rows:
            if r.class_name == class_names[0]:
                continue
            lines.append(
                f"| {r.site} | {r.year} | {r.class_name} | {r.quadrats} | {r.mean_cover:.2f} | "
                f"{r.cover_ci_low:.2f}–{r.cover_ci_high:.2f} | {r.colonies} | {r.density_per_m2:.2f} |"
            )
        lines.append("")
    lines += [
        "![Cover by year](cover_by_year.png)",
        "",
        "![Size-frequency](size_frequency.png)",
        "",
        "Files: " + ", ".join(f"`{name}`" for name in SURVEY_FILES if not name.endswith((".png", ".md"))) + ".",
    ]
    return "\n".join(lines) + "\n"


def format_site_year_table(rows: Sequence[SiteYearRow], genera: int = 3) -> str:
    """Site x year as a person reads it: quadrats, all-coral cover with its interval, the most covered genera."""
    groups: dict[tuple[str | None, int | None], list[SiteYearRow]] = {}
    for row in rows:
        groups.setdefault((row.site, row.year), []).append(row)
    lines = []
    for (site, year), members in groups.items():
        total = next(r for r in members if r.class_name == ALL_CORAL)
        top = sorted(
            (r for r in members[1:] if r.class_name != ALL_CORAL and r.mean_cover > 0), key=lambda r: -r.mean_cover
        )
        lines.append(
            [
                site or "-",
                year or "-",
                total.quadrats,
                f"{total.mean_cover:.1f} ({total.cover_ci_low:.1f}-{total.cover_ci_high:.1f})",
                ", ".join(f"{r.class_name} {r.mean_cover:.1f}" for r in top[:genera]) or "-",
            ]
        )
    return format_table(
        ["site", "year", "quadrats", "coral cover % (95% interval)", f"top {genera} genera, cover %"], lines
    )


def site_year_table(
    sources: Mapping[str, Sequence[QuadratSummary]], class_names: Sequence[str], seed: int = 0
) -> dict[str, list[SiteYearRow]]:
    """`site_year_summary` for each source."""
    return {source: site_year_summary(quadrats, class_names, seed=seed) for source, quadrats in sources.items()}


def write_survey_report(
    sources: Mapping[str, Sequence[QuadratSummary]],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    out_dir: str | Path,
    seed: int = 0,
) -> list[Path]:
    """Write every survey file (SURVEY_FILES) into `out_dir`, each atomically; returns their paths."""
    out = Path(out_dir)
    edges = log_bins()
    summaries = site_year_table(sources, class_names, seed)
    place = ["source", "image", "site", "year"]
    write_text_atomic(out / "cover.csv", _csv(place + ["class", "cover"], cover_rows(sources, class_names)))
    columns = [f.name.replace("class_name", "class") for f in fields(SiteYearRow)]
    write_text_atomic(
        out / "site_year.csv",
        _csv(["source"] + columns, [[source, *astuple(r)] for source, rows in summaries.items() for r in rows]),
    )
    write_text_atomic(
        out / "colonies.csv", _csv(place + ["class", "area_cm2", "perimeter_cm"], colony_rows(sources, class_names))
    )
    write_text_atomic(
        out / "size_frequency.csv",
        _csv(
            ["source", "class", "area_cm2_from", "area_cm2_to", "colonies"],
            size_frequency_rows(sources, class_names, edges),
        ),
    )
    _cover_plot(summaries, class_names, palette, out / "cover_by_year.png")
    _size_plot(sources, class_names, palette, edges, out / "size_frequency.png")
    write_text_atomic(out / "survey.md", _markdown(summaries, class_names))
    return [out / name for name in SURVEY_FILES]


@dataclass(frozen=True)
class SideBySideRow:
    """One site x year x class of an evaluated split, ground truth beside prediction (`site_year_side_by_side.csv`)."""

    site: str | None
    year: int | None
    class_name: str
    quadrats: int
    gt_mean_cover: float
    gt_cover_ci_low: float
    gt_cover_ci_high: float
    predicted_mean_cover: float
    predicted_cover_ci_low: float
    predicted_cover_ci_high: float
    cover_error: float  # predicted - ground truth, percentage points
    gt_colonies: int
    predicted_colonies: int
    gt_density_per_m2: float
    predicted_density_per_m2: float
    gt_median_colony_area_cm2: float | None
    predicted_median_colony_area_cm2: float | None


SPLIT_SURVEY_FILES = (*SURVEY_FILES, "site_year_side_by_side.csv", "ground_truth_vs_prediction.png")


def side_by_side(gt_rows: Sequence[SiteYearRow], predicted_rows: Sequence[SiteYearRow]) -> list[SideBySideRow]:
    """Pair the two sources' rows of the same site, year and class (both summarise the same quadrats)."""
    predicted = {(r.site, r.year, r.class_name): r for r in predicted_rows}
    rows = []
    for g in gt_rows:
        p = predicted[(g.site, g.year, g.class_name)]
        rows.append(
            SideBySideRow(
                g.site, g.year, g.class_name, g.quadrats,
                g.mean_cover, g.cover_ci_low, g.cover_ci_high,
                p.mean_cover, p.cover_ci_low, p.cover_ci_high, p.mean_cover - g.mean_cover,
                g.colonies, p.colonies, g.density_per_m2, p.density_per_m2,
                g.median_colony_area_cm2, p.median_colony_area_cm2,
            )
        )  # fmt: skip
    return rows


def _comparison_plot(
    gt: Sequence[QuadratSummary],
    predicted: Sequence[QuadratSummary],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    edges: np.ndarray,
    path: Path,
    seed: int,
) -> None:
    """Left: mean cover per genus over every quadrat, ground truth (hatched) beside prediction, 95% intervals.
    Right: the size structure of all coral colonies, both sources on the same log bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    genera = _genera(class_names)
    fig, (cover_ax, size_ax) = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(genera) + 6), 4))
    positions = np.arange(len(genera))
    for offset, (source, quadrats) in ((-0.2, (GROUND_TRUTH, gt)), (0.2, (PREDICTION, predicted))):
        covers = np.stack([q.cover for q in quadrats]) if quadrats else np.zeros((0, len(class_names)))
        stats = np.array([bootstrap_mean(covers[:, i], seed=seed) for i in genera]).reshape(-1, 3)
        cover_ax.bar(
            positions + offset,
            stats[:, 0],
            width=0.4,
            yerr=[stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]],
            capsize=3,
            color=[tuple(c / 255 for c in palette[i]) for i in genera],
            edgecolor="black",
            hatch="//" if source == GROUND_TRUTH else None,
            label=source,
        )
        areas = [c.area_cm2 for q in quadrats for c in q.colonies if c.class_index > 0]
        size_ax.step(
            np.sqrt(edges[:-1] * edges[1:]),
            size_frequency(areas, edges),
            where="mid",
            linestyle=_style(source),
            color="black",
            label=source,
        )
    cover_ax.set_xticks(positions, [class_names[i] for i in genera], rotation=45, ha="right", fontsize=8)
    cover_ax.set_ylabel("mean cover % (95% bootstrap interval)")
    cover_ax.set_title("cover per genus, all quadrats", fontsize=9)
    cover_ax.legend(fontsize=7)
    size_ax.set_xscale("log")
    size_ax.set_xlabel("colony area (cm²)")
    size_ax.set_ylabel("colonies")
    size_ax.set_title("size structure, all coral", fontsize=9)
    size_ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _side_by_side_markdown(rows: Sequence[SideBySideRow], class_names: Sequence[str], folder: str) -> str:
    lines = [
        "## Survey numbers: ground truth beside prediction",
        "",
        "The ecology numbers of these quadrats computed twice: from the ground-truth masks and annotated colonies, "
        "and from the predicted masks and colonies (mean cover over quadrats with its 95% bootstrap interval; "
        "colony counts and density per m²).",
        "",
        "| site | year | genus | quadrats | GT cover % (95%) | predicted cover % (95%) | error (points) "
        "| GT colonies | predicted colonies | GT per m² | predicted per m² |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.class_name == class_names[0]:
            continue
        lines.append(
            f"| {r.site} | {r.year} | {r.class_name} | {r.quadrats} "
            f"| {r.gt_mean_cover:.2f} ({r.gt_cover_ci_low:.2f}–{r.gt_cover_ci_high:.2f}) "
            f"| {r.predicted_mean_cover:.2f} ({r.predicted_cover_ci_low:.2f}–{r.predicted_cover_ci_high:.2f}) "
            f"| {r.cover_error:+.2f} | {r.gt_colonies} | {r.predicted_colonies} "
            f"| {r.gt_density_per_m2:.2f} | {r.predicted_density_per_m2:.2f} |"
        )
    lines += [
        "",
        f"![Ground truth vs prediction]({folder}/ground_truth_vs_prediction.png)",
        "",
        f"![Size-frequency]({folder}/size_frequency.png)",
        "",
        f"![Cover by year]({folder}/cover_by_year.png)",
        "",
        f"Files in `{folder}/`: `site_year_side_by_side.csv`, and "
        + ", ".join(f"`{name}`" for name in SURVEY_FILES if not name.endswith(".png"))
        + " with a `source` column (docs/survey.md).",
    ]
    return "\n".join(lines) + "\n"


def write_split_survey(
    gt: Sequence[QuadratSummary],
    predicted: Sequence[QuadratSummary],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    out_dir: str | Path,
    seed: int = 0,
) -> str:
    """The survey files of an evaluated split's quadrats for both sources, the side-by-side table and plot
    (SPLIT_SURVEY_FILES, in `out_dir`); returns the section for the evaluation's report.md."""
    out = Path(out_dir)
    write_survey_report({GROUND_TRUTH: gt, PREDICTION: predicted}, class_names, palette, out, seed=seed)
    summaries = site_year_table({GROUND_TRUTH: gt, PREDICTION: predicted}, class_names, seed)
    rows = side_by_side(summaries[GROUND_TRUTH], summaries[PREDICTION])
    columns = [f.name.replace("class_name", "class") for f in fields(SideBySideRow)]
    write_text_atomic(out / "site_year_side_by_side.csv", _csv(columns, [astuple(r) for r in rows]))
    _comparison_plot(gt, predicted, class_names, palette, log_bins(), out / "ground_truth_vs_prediction.png", seed)
    return _side_by_side_markdown(rows, class_names, out.name)
