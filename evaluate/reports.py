"""A split's evaluation as files a person reads: JSON, CSVs, two PNG charts and a short report.

Everything is computed from the per-image confusion matrices (`models.metrics`), so the split's
numbers are one accumulated matrix, never an average of per-image scores. Every file is written
atomically, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_path, write_json_atomic, write_text_atomic
from common.table import format_table
from models.metrics import (
    CoverErrors,
    SegmentationMetrics,
    compute_metrics,
    cover_errors,
    cover_from_matrix,
    merge_classes,
)

REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "per_image.csv",
    "cover.csv",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "iou_per_class.png",
    "per_site_and_year.csv",
    "report.md",
)
GROUPINGS = ("site", "year")  # the sample fields (data_engineering.dataset_contract) the report breaks metrics down by


@dataclass
class ImageResult:
    """One evaluated image: its own confusion matrix (None without ground truth) and predicted cover."""

    name: str
    sample_id: str
    predicted_cover: np.ndarray
    matrix: np.ndarray | None = None
    site: str | None = None  # the sample's `site` and `year` (from the file name), None where unknown
    year: int | None = None


@dataclass(frozen=True)
class ColonyCounts:
    """Colony-level matches of one class: true positives, false positives (invented), false negatives (missed)."""

    tp: int
    fp: int
    fn: int

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


@dataclass
class SplitReport:
    """What `evaluate` knows about one split of one run; the files are views of it."""

    run_name: str
    split: str
    class_names: Sequence[str]
    palette: Sequence[Sequence[int]]
    background_index: int | None
    images: list[ImageResult]
    colonies: dict[str, ColonyCounts] | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # crop, stride, tta, checkpoint: how it was run
    dataset: str = ""  # the FiftyOne dataset scored
    taxonomy: str = ""  # the taxonomy level of `class_names`
    levels: list[SplitReport] = field(default_factory=list)  # the same predictions mapped up to coarser levels
    # at a coarser level: evaluations of runs trained at that level directly, on the same dataset and split
    compared: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scored(self) -> list[ImageResult]:
        return [image for image in self.images if image.matrix is not None]

    @property
    def matrix(self) -> np.ndarray:
        k = len(self.class_names)
        return sum(
            (image.matrix for image in self.images if image.matrix is not None), np.zeros((k, k), dtype=np.int64)
        )

    def metrics(self) -> SegmentationMetrics:
        return compute_metrics(self.matrix, self.class_names, self.background_index)


def report_at_level(
    report: SplitReport,
    mapping: Sequence[int],
    taxonomy: str,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> SplitReport:
    """`report` with predictions and ground truth both mapped up through `mapping` (class index -> index at the
    coarser level, `prepare.taxonomy.level_mapping`): each image's matrix merged (`models.metrics.merge_classes`,
    equal to the matrix of the mapped masks) and its predicted cover summed per coarser class. Colonies are not
    re-matched at coarser levels."""
    k = len(class_names)
    index = np.asarray(mapping, dtype=np.int64)
    images = [
        ImageResult(
            image.name,
            image.sample_id,
            np.bincount(index, weights=np.asarray(image.predicted_cover, dtype=np.float64), minlength=k),
            None if image.matrix is None else merge_classes(image.matrix, mapping, k),
            image.site,
            image.year,
        )
        for image in report.images
    ]
    background = None if report.background_index is None else int(index[report.background_index])
    return SplitReport(
        report.run_name,
        report.split,
        list(class_names),
        palette,
        background,
        images,
        settings=report.settings,
        dataset=report.dataset,
        taxonomy=taxonomy,
    )


def _num(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


def _csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def per_class_rows(report: SplitReport) -> list[dict[str, Any]]:
    """Pixel metrics, cover and colony scores of each class over the split."""
    metrics = report.metrics()
    gt_cover, predicted_cover = cover_from_matrix(report.matrix)
    errors = _cover_errors(report)
    rows = []
    for i, row in enumerate(metrics.per_class()):
        colonies = (report.colonies or {}).get(str(row["class"]))
        rows.append(
            {
                **{k: _num(v) if isinstance(v, float) else v for k, v in row.items()},
                "gt_cover": _num(gt_cover[i]),
                "predicted_cover": _num(predicted_cover[i]),
                "cover_mae": _num(errors.mae[i]),
                "cover_bias": _num(errors.bias[i]),
                "colony_tp": colonies.tp if colonies else None,
                "colony_fp": colonies.fp if colonies else None,
                "colony_fn": colonies.fn if colonies else None,
                "colony_recall": _num(colonies.recall) if colonies else None,
                "colony_precision": _num(colonies.precision) if colonies else None,
            }
        )
    return rows


def _image_covers(report: SplitReport) -> tuple[np.ndarray, np.ndarray]:
    """`[N, K]` ground-truth and predicted cover of the scored images, over their labelled pixels."""
    k = len(report.class_names)
    pairs = [cover_from_matrix(image.matrix) for image in report.images if image.matrix is not None]
    if not pairs:
        return np.zeros((0, k)), np.zeros((0, k))
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _cover_errors(report: SplitReport) -> CoverErrors:
    gt, predicted = _image_covers(report)
    return cover_errors(gt, predicted)


def _group_key(value: Any) -> tuple[bool, float, str]:
    return (value is None, value if isinstance(value, (int, float)) else 0.0, str(value))


def group_rows(report: SplitReport, by: str) -> list[dict[str, Any]]:
    """Scores of the scored images grouped by their `site` or `year` (None: unknown), each group from its own
    accumulated matrix: mIoU (coral), pixel accuracy, mean coral cover (every class but background) in the ground
    truth and the prediction, `coral_cover_mae` (mean |predicted - GT| coral cover per image, percentage points) and
    `class_cover_mae` (the per-class cover MAE averaged over the coral classes)."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    groups: dict[Any, list[ImageResult]] = {}
    for image in report.scored:
        groups.setdefault(getattr(image, by), []).append(image)
    k = len(report.class_names)
    coral = np.ones(k, dtype=bool)
    if report.background_index is not None:
        coral[report.background_index] = False
    rows = []
    for value in sorted(groups, key=_group_key):
        members = groups[value]
        matrix = sum((image.matrix for image in members if image.matrix is not None), np.zeros((k, k), np.int64))
        metrics = compute_metrics(matrix, report.class_names, report.background_index)
        gt, predicted = (
            np.stack(c)
            for c in zip(*(cover_from_matrix(image.matrix) for image in members if image.matrix is not None))
        )
        gt_coral, predicted_coral = np.nansum(gt[:, coral], axis=1), np.nansum(predicted[:, coral], axis=1)
        class_mae = cover_errors(gt, predicted).mae[coral]
        rows.append(
            {
                "by": by,
                "group": value,
                "images": len(members),
                "miou": _num(metrics.miou),
                "pixel_accuracy": _num(metrics.pixel_accuracy),
                "gt_coral_cover": _num(float(gt_coral.mean())),
                "predicted_coral_cover": _num(float(predicted_coral.mean())),
                "coral_cover_mae": _num(float(np.abs(predicted_coral - gt_coral).mean())),
                "class_cover_mae": _num(float(np.nanmean(class_mae))) if (~np.isnan(class_mae)).any() else None,
            }
        )
    return rows


def level_json(level: SplitReport) -> dict[str, Any]:
    """One coarser level in metrics.json: its classes, summary, per-class rows and the runs trained at it directly."""
    rows = per_class_rows(level) if level.scored else None
    colony_keys = [key for key in (rows or [{}])[0] if key.startswith("colony_")]
    return {
        "taxonomy": level.taxonomy,
        "classes": list(level.class_names),
        "summary": level.metrics().summary() if level.scored else None,
        "per_class": [{k: v for k, v in row.items() if k not in colony_keys} for row in rows] if rows else None,
        "runs_trained_at_this_level": level.compared,
    }


def metrics_json(report: SplitReport) -> dict[str, Any]:
    """The content of metrics.json: how it was run, the summary, the per-class rows, the breakdown per site and
    per year, and the same predictions scored at every coarser taxonomy level."""
    summary = report.metrics().summary() if report.scored else None
    colonies = None
    if report.colonies:
        total = ColonyCounts(*(sum(getattr(c, f) for c in report.colonies.values()) for f in ("tp", "fp", "fn")))
        colonies = {
            "tp": total.tp,
            "fp": total.fp,
            "fn": total.fn,
            "recall": _num(total.recall),
            "precision": _num(total.precision),
        }
    return {
        "run": report.run_name,
        "dataset": report.dataset,
        "split": report.split,
        "taxonomy": report.taxonomy,
        "images": len(report.images),
        "scored_images": len(report.scored),
        "classes": list(report.class_names),
        "background_index": report.background_index,
        "settings": report.settings,
        "summary": summary,
        "colonies": colonies,
        "per_class": per_class_rows(report) if report.scored else None,
        "by_site": group_rows(report, "site") if report.scored else None,
        "by_year": group_rows(report, "year") if report.scored else None,
        "levels": [level_json(level) for level in report.levels] if report.scored else [],
    }


def per_image_rows(report: SplitReport) -> tuple[list[str], list[list[Any]]]:
    """One row per image: mIoU, pixel accuracy, per-class IoU (empty without ground truth), predicted cover, site, year."""
    names = list(report.class_names)
    headers = (
        ["image", "sample_id", "miou", "pixel_accuracy"]
        + [f"iou_{n}" for n in names]
        + [f"predicted_cover_{n}" for n in names]
        + list(GROUPINGS)
    )
    rows: list[list[Any]] = []
    for image in report.images:
        scores: list[float | None]
        if image.matrix is None:
            scores = [None] * (2 + len(names))
        else:
            m = compute_metrics(image.matrix, names, report.background_index)
            scores = [_num(m.miou), _num(m.pixel_accuracy)] + [_num(v) for v in m.iou]
        rows.append(
            [image.name, image.sample_id, *scores, *(_num(v) for v in image.predicted_cover), image.site, image.year]
        )
    return headers, rows


def cover_rows(report: SplitReport) -> list[list[Any]]:
    """Long format: image, class, ground-truth cover %, predicted cover %, error (predicted - GT)."""
    rows = []
    for image in report.images:
        gt = cover_from_matrix(image.matrix)[0] if image.matrix is not None else None
        predicted = cover_from_matrix(image.matrix)[1] if image.matrix is not None else image.predicted_cover
        for i, name in enumerate(report.class_names):
            g = _num(gt[i]) if gt is not None else None
            p = _num(predicted[i])
            rows.append([image.name, name, g, p, None if g is None or p is None else round(p - g, 6)])
    return rows


def format_per_class_table(report: SplitReport) -> str:
    """The per-class table printed at the end of `evaluate`."""
    if not report.scored:
        return f"{len(report.images)} images predicted; none has ground truth, so nothing was scored."
    rows = per_class_rows(report)
    colonies = report.colonies is not None

    def pct(value: float | None) -> float:
        return float("nan") if value is None else 100 * value

    body = []
    for row in rows:
        line = [
            row["class"],
            pct(row["iou"]),
            pct(row["accuracy"]),
            pct(row["precision"]),
            pct(row["dice"]),
            row["gt_cover"] or 0.0,
            row["predicted_cover"] or 0.0,
        ]
        if colonies:
            line += [pct(row["colony_recall"]), pct(row["colony_precision"])]
        body.append(line)
    summary = report.metrics()
    headers = ["class", "IoU %", "recall %", "precision %", "Dice %", "GT cover %", "pred cover %"]
    if colonies:
        headers += ["colony recall %", "colony precision %"]
    footer = (
        f"mIoU (coral) {pct(_num(summary.miou)):.2f}  mIoU (with background) {pct(_num(summary.miou_with_background)):.2f}  "
        f"mAcc {pct(_num(summary.macc)):.2f}  pixel accuracy {pct(_num(summary.pixel_accuracy)):.2f}  fwIoU {pct(_num(summary.fwiou)):.2f}"
    )
    return format_table(headers, body) + "\n" + footer


def _confusion_png(report: SplitReport, path: Path) -> None:
    """Row-normalised heatmap (each row: where that class's ground-truth pixels went), counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = report.matrix
    names = list(report.class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{report.run_name} / {report.split}: confusion (row share, pixel counts)")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{share[i, j]:.0%}\n{matrix[i, j]}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)


def _iou_png(report: SplitReport, path: Path) -> None:
    """Per-class IoU bars in the taxonomy's colours; NaN classes shown as an empty slot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report.metrics()
    names = list(report.class_names)
    values = np.nan_to_num(metrics.iou * 100)
    colours = [tuple(c / 255 for c in report.palette[i]) for i in range(len(names))]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), values, color=colours, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU %")
    ax.axhline(
        100 * np.nan_to_num(metrics.miou),
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"mIoU (coral) {100 * np.nan_to_num(metrics.miou):.1f}",
    )
    ax.legend(loc="upper right")
    ax.set_title(f"{report.run_name} / {report.split}: IoU per class")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG, atomically, and free it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _markdown(report: SplitReport) -> str:
    s = metrics_json(report)
    lines = [f"# Evaluation of `{report.run_name}` on dataset `{report.dataset}`, split `{report.split}`", ""]
    lines.append(
        f"{s['images']} images, {s['scored_images']} with ground truth. Settings: "
        + ", ".join(f"{k}={v}" for k, v in report.settings.items())
        + "."
    )
    lines.append("")
    if not report.scored:
        lines.append("No image has ground truth: predictions were written, nothing was scored.")
        return "\n".join(lines) + "\n"
    lines += ["```", format_per_class_table(report), "```", ""]
    if s["colonies"]:
        c = s["colonies"]
        lines += [
            f"Colonies: {c['tp']} found, {c['fn']} missed, {c['fp']} invented (recall {c['recall']}, precision {c['precision']}).",
            "",
        ]
    lines += [
        "Classes absent from both ground truth and prediction have no IoU and are left out of the means (docs/evaluation.md).",
        "",
        "![IoU per class](iou_per_class.png)",
        "",
        "![Confusion matrix](confusion_matrix.png)",
        "",
    ]
    for by in GROUPINGS:
        lines += [f"## Per {by}", "", "```", format_group_table(report, by), "```", ""]
    if report.levels:
        lines += [
            "## At coarser taxonomy levels",
            "",
            f"The same predictions and ground truth, each pixel's class mapped up from `{report.taxonomy}` through the "
            "taxonomy files (prepare/taxonomies), beside runs trained at that level directly (same dataset and split).",
            "",
        ]
    for level in report.levels:
        lines += [
            f"### `{level.taxonomy}` ({_count(len(level.class_names) - (level.background_index is not None), 'class')})",
            "",
            "```",
            format_per_class_table(level),
            "```",
            "",
            "```",
            format_comparison_table(level),
            "```",
            "",
        ]
    lines.append(
        "Files: `metrics.json`, `per_class.csv`, `per_image.csv`, `cover.csv`, `confusion_matrix.csv`, `per_site_and_year.csv`."
    )
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"


def _pct(value: float | None) -> float:
    return float("nan") if value is None else 100 * value


def format_group_table(report: SplitReport, by: str) -> str:
    """The per-site (or per-year) table of report.md: images, mIoU, pixel accuracy and cover error per group."""
    rows = [
        [
            "(unknown)" if row["group"] is None else row["group"],
            row["images"],
            _pct(row["miou"]),
            _pct(row["pixel_accuracy"]),
            row["gt_coral_cover"],
            row["predicted_coral_cover"],
            row["coral_cover_mae"],
            row["class_cover_mae"] if row["class_cover_mae"] is not None else float("nan"),
        ]
        for row in group_rows(report, by)
    ]
    headers = [
        by,
        "images",
        "mIoU %",
        "pixel acc. %",
        "GT coral %",
        "pred coral %",
        "coral cover MAE",
        "class cover MAE",
    ]
    return format_table(headers, rows)


def format_comparison_table(level: SplitReport) -> str:
    """This run mapped up to `level` beside the runs trained at that level directly."""
    summary = level.metrics()
    rows: list[list[Any]] = [
        [f"{level.run_name} (mapped up)", _pct(_num(summary.miou)), _pct(_num(summary.pixel_accuracy))]
    ]
    rows += [[run["run"], _pct(run["miou"]), _pct(run["pixel_accuracy"])] for run in level.compared]
    table = format_table(["run", "mIoU (coral) %", "pixel accuracy %"], rows)
    if not level.compared:
        table += f"\n(no run trained at {level.taxonomy} is evaluated on this dataset and split yet)"
    return table


def write_report(report: SplitReport, out_dir: str | Path, sections: Sequence[str] = ()) -> list[Path]:
    """Write every report file into `out_dir` (runs/<name>/eval/<dataset>/<split>/); returns their paths.

    `sections`: more markdown for report.md, after the scores (the survey numbers side by side).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "per_image.csv", out / "cover.csv", out / "report.md"]
    write_json_atomic(out / "metrics.json", metrics_json(report))
    write_text_atomic(out / "per_image.csv", _csv(*per_image_rows(report)))
    write_text_atomic(
        out / "cover.csv", _csv(["image", "class", "gt_cover", "predicted_cover", "error"], cover_rows(report))
    )
    if report.scored:
        rows = per_class_rows(report)
        write_text_atomic(out / "per_class.csv", _csv(list(rows[0]), [list(r.values()) for r in rows]))
        names = list(report.class_names)
        write_text_atomic(
            out / "confusion_matrix.csv",
            _csv(["gt \\ predicted"] + names, [[n] + list(map(int, r)) for n, r in zip(names, report.matrix)]),
        )
        groups = [row for by in GROUPINGS for row in group_rows(report, by)]
        write_text_atomic(out / "per_site_and_year.csv", _csv(list(groups[0]), [list(r.values()) for r in groups]))
        _confusion_png(report, out / "confusion_matrix.png")
        _iou_png(report, out / "iou_per_class.png")
        written += [
            out / "per_class.csv",
            out / "confusion_matrix.csv",
            out / "confusion_matrix.png",
            out / "iou_per_class.png",
            out / "per_site_and_year.csv",
        ]
    write_text_atomic(out / "report.md", "\n".join([_markdown(report), *sections]))
    for stale in set(REPORT_FILES) - {p.name for p in written}:
        (out / stale).unlink(missing_ok=True)  # a rerun without ground truth leaves no scores of an earlier run
    return written
