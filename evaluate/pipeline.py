"""One run on one split: predict every image, score it, write it back to FiftyOne, write the report.

Images stream one at a time (predict, save the mask, score, write the sample, forget), so memory
is flat in the number of images; only each image's small confusion matrix is kept for the report.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor

from common.cli import UserError
from common.fileio import exclusive_lock, sha256_file
from common.images import read_image
from common.names import check_file_name, check_name
from common.progress import progress
from common.runtime import Runtime, loaded_objects_frozen, resolve_runtime
from common.settings import Settings
from data_engineering import dataset_contract as contract
from data_engineering.dataset_contract import GT_FIELD
from evaluate import writeback
from evaluate.colonies import Colony
from evaluate.ecology import QuadratScale, QuadratSummary, measure_quadrat
from evaluate.fields import RunFields
from evaluate.finish import write_mask_and_trace
from evaluate.inference import predict_image, window_forward
from evaluate.prediction_cache import CACHE_FILE, PredictionCache, image_key
from evaluate.reports import ImageResult, SplitReport, format_per_class_table, report_at_level, write_report
from evaluate.survey_report import PREDICTION, SPLIT_SURVEY_DIR, write_split_survey, write_survey_report
from models.checkpoint import CheckpointSpec, build_model, checkpoint_stem, read_checkpoint
from models.metrics import compute_metrics, confusion_matrix, cover_percent
from models.sliding_window import WINDOW_LAYOUT, TestTimeAugmentation, default_window_stride
from prepare.layout import (
    BACKGROUND_COLOR,
    BACKGROUND_NAME,
    INFO_FILE,
    ManifestEntry,
    PreparedDataset,
    default_output_dir,
    load_prepared,
    png_palette,
)
from prepare.mask_png import read_mask
from prepare.rasterize import polygon_from_rings, to_pixels
from prepare.taxonomy import BUILTIN_DIR, Taxonomy, coarser_levels, level_mapping, load_taxonomy, taxonomy_dirs

SPLITS = ("train", "val", "test", "all")
EVAL_DIR = "eval"
LOCK_FILE = ".lock"  # under runs/<name>/eval/: held while an evaluation of the run writes its files and fields


def evaluation_dir(run_dir: Path, dataset: str, split: str) -> Path:
    """`runs/<name>/eval/<dataset>/<split>/`: one folder per (run, dataset, split), so no evaluation replaces another's
    report, metrics or the mask files its FiftyOne fields point to (docs/evaluation.md)."""
    return (
        run_dir
        / EVAL_DIR
        / check_name(dataset, "dataset name", "pass --dataset with a FiftyOne dataset's name")
        / split
    )


@dataclass(frozen=True)
class EvaluateOptions:
    """One evaluation, complete: `from_settings` (the command line) fills every default from the settings once."""

    run_dir: Path
    dataset: str
    data_root: Path  # DATA_ROOT: where the dataset's prepared folders are, unless `data_dir` says
    split: str = "val"
    which: str = "best"
    window: int | None = None  # None: the run's
    window_stride: int | None = None  # None: the run's, or with `window` given, that window
    batch_size: int = 4
    tta: bool = False  # also predict every window mirrored
    tta_scales: tuple[float, ...] = (1.0,)  # predict the image at these scales too, logits averaged (1: as it is)
    precision: str = "auto"
    device: str = "auto"
    data_dir: Path | None = None  # None: the dataset's folder prepared with the run's taxonomy, under data_root
    weights: str | None = None  # the backbone weights the run was trained on; None: a random backbone
    taxonomy_dirs: tuple[Path, ...] = (BUILTIN_DIR,)
    gt_field: str = GT_FIELD
    quadrat: QuadratScale = QuadratScale()  # the ground one photo covers, for colony sizes in cm² (survey numbers)

    @classmethod
    def from_settings(cls, settings: Settings, run_dir: Path, **flags: Any) -> EvaluateOptions:
        """The command's flags; each one left out (None) from the settings: DEMO_DATASET, DEVICE, DINO_WEIGHTS, ..."""
        given = {key: value for key, value in flags.items() if value is not None}
        return cls(
            run_dir=run_dir, dataset=given.pop("dataset", settings.demo_dataset), data_root=settings.data_root,
            device=given.pop("device", settings.device), weights=given.pop("weights", settings.dino_weights) or None,
            taxonomy_dirs=tuple(taxonomy_dirs(settings.taxonomy_dirs)), gt_field=settings.gt_field_name, **given,
        )  # fmt: skip

    @property
    def augmentation(self) -> TestTimeAugmentation:
        """The test-time augmentation `--tta` and `--tta-scales` ask for (checked when the options are made)."""
        return TestTimeAugmentation(tuple(self.tta_scales), bool(self.tta))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tta_scales", self.augmentation.scales)  # a slip is refused before any work


def check_prepared(prepared: PreparedDataset, spec: CheckpointSpec, run_dir: Path, dataset: str) -> None:
    """The prepared folder must hold the run's classes, made from this dataset."""
    if list(prepared.classes) != list(spec.classes):
        taxonomy = (prepared.info.get("taxonomy") or {}).get("name", "?")
        raise UserError(
            f"run {run_dir.name} predicts the {len(spec.classes)} classes of taxonomy {spec.taxonomy!r} but {prepared.root} "
            f"holds the {len(prepared.classes)} classes of taxonomy {taxonomy!r}; prepare the dataset with --taxonomy {spec.taxonomy} "
            f"or pass its folder with --data-dir"
        )
    source = (prepared.info.get("source") or {}).get("dataset")
    if source not in (None, dataset):
        raise UserError(
            f"{prepared.root} was prepared from dataset {source!r}, not {dataset!r}; pass --data-dir with this dataset's prepared folder"
        )


def run_palette(spec: CheckpointSpec, taxonomy: Taxonomy) -> list[list[int]]:
    """The run's class colours; a spec saved without them takes the taxonomy's (background black)."""
    if spec.palette:
        return [list(colour) for colour in spec.palette]
    if list(spec.classes) != [BACKGROUND_NAME, *taxonomy.classes]:
        raise UserError(
            f"the run's checkpoint has no palette and its classes differ from taxonomy {taxonomy.name!r}'s, so its colours are unknown"
        )
    return [list(BACKGROUND_COLOR), *map(list, taxonomy.colors)]


def find_prepared(options: EvaluateOptions, spec: CheckpointSpec, out: TextIO) -> PreparedDataset | None:
    """The prepared folder with the ground truth; None (predict only) when the default one does not exist."""
    if options.data_dir is None:
        folder = default_output_dir(options.data_root, options.dataset, spec.taxonomy)
        if not folder.is_dir():
            others = sorted(p.name for p in folder.parent.glob(f"{options.dataset}_*") if (p / INFO_FILE).is_file())
            if others:
                raise UserError(
                    f"run {options.run_dir.name} predicts taxonomy {spec.taxonomy!r} but dataset {options.dataset!r} was prepared only as "
                    f"{', '.join(others)}; prepare it with --taxonomy {spec.taxonomy} or pass a folder with --data-dir"
                )
            print(f"no prepared folder {folder}: predicting only, nothing will be scored", file=out)
            return None
    prepared = load_prepared(options.data_dir or folder)
    check_prepared(prepared, spec, options.run_dir, options.dataset)
    return prepared


def _mask_name(filepath: str, sample_id: str, used: set[str]) -> str:
    stem = Path(filepath).stem
    name = f"{stem}.png" if f"{stem}.png" not in used else f"{stem}__{sample_id}.png"
    check_file_name(name, f"the predicted mask's file name for image {filepath}", "rename the image to a shorter name")
    used.add(name)
    return name


def _ground_truth(
    prepared: PreparedDataset, entry: ManifestEntry, image_shape: tuple[int, int], filepath: str
) -> np.ndarray:
    mask = read_mask(prepared.mask_path(entry))
    if mask.shape != image_shape:
        raise UserError(
            f"image {filepath} is {image_shape[1]}x{image_shape[0]} but its mask {prepared.mask_path(entry)} is "
            f"{mask.shape[1]}x{mask.shape[0]}; the image changed since prepare: rerun prepare/prepare_data.py"
        )
    return mask


def _predict_or_reuse(
    cache: PredictionCache,
    forward: Callable[[Tensor], Tensor],
    sample_id: str,
    filepath: str,
    mask_path: Path,
    num_classes: int,
    window: int,
    window_stride: int,
    batch_size: int,
    device: torch.device,
    mask_palette: bytes,
    augmentation: TestTimeAugmentation,
) -> tuple[np.ndarray, list[Colony], bool]:
    """(predicted mask, colonies, reused) of one image: from the cache when nothing it depends on changed."""
    key = image_key(filepath)
    colonies = cache.get(sample_id, key, mask_path)
    if colonies is not None:
        return read_mask(mask_path), colonies, True
    prediction = predict_image(
        forward, read_image(filepath), num_classes, window, window_stride, batch_size, device, augmentation
    )
    colonies, _ = write_mask_and_trace(prediction.mask, prediction.confidence, mask_path, mask_palette)
    cache.add(sample_id, key, mask_path, colonies)
    return prediction.mask, colonies, False


def gt_colony_outlines(polylines: Any, classes: Sequence[str], width: int, height: int) -> list[tuple[int, Any]]:
    """(class index, outline in pixels) of each annotated colony (polylines relabelled to the run's classes):
    the colonies as drawn, so two touching colonies of a genus count as two, as ecologists count them."""
    outlines = []
    for polyline in polylines.polylines:
        area = polygon_from_rings([to_pixels(ring, width, height) for ring in polyline.points])
        if area is not None and polyline.label in classes:
            outlines.append((classes.index(polyline.label), area))
    return outlines


def _quadrat(
    sample: Any, mask: np.ndarray, colonies: list[tuple[int, Any]], classes: Sequence[str], scale: QuadratScale
) -> QuadratSummary:
    """The survey numbers of one quadrat (cover, colony sizes) from a mask and its colonies."""
    return measure_quadrat(Path(sample.filepath).name, *_site_year(sample), mask, colonies, len(classes), scale)


def _tta_key(augmentation: TestTimeAugmentation) -> bool | dict[str, Any]:
    """What a cached prediction records of the TTA: the mirror alone as before scales existed (so earlier caches
    stay valid), the scales too when there are others than 1."""
    return augmentation.flip if augmentation.scales == (1.0,) else augmentation.describe()


def _site_year(sample: Any) -> tuple[str | None, int | None]:
    """The sample's site and year (data_engineering parses them from the file name), None where it has none."""
    site = sample[contract.SITE] if sample.has_field(contract.SITE) else None
    year = contract.read_year(sample[contract.YEAR]) if sample.has_field(contract.YEAR) else None
    return (None if site is None else str(site)), year


def coarser_reports(
    report: SplitReport, taxonomy: Taxonomy, options: EvaluateOptions, run_dir: Path
) -> list[SplitReport]:
    """The split scored at every taxonomy level defined from the run's (`finegrained` -> `extended`, `main_families`,
    `agnostic`), each beside the runs trained at that level directly; none when the run's classes are not exactly
    its taxonomy's (a custom class list has no known hierarchy)."""
    if list(report.class_names) != [BACKGROUND_NAME, *taxonomy.classes] or report.background_index != 0:
        return []
    levels = []
    for level in coarser_levels(taxonomy, list(options.taxonomy_dirs)):
        mapped = report_at_level(
            report, level_mapping(taxonomy, level), level.name, [BACKGROUND_NAME, *level.classes],
            [list(BACKGROUND_COLOR), *map(list, level.colors)],
        )  # fmt: skip
        mapped.compared = runs_evaluated_at(
            run_dir.parent, level.name, options.dataset, options.split, run_dir, mapped.class_names
        )
        levels.append(mapped)
    return levels


def runs_evaluated_at(
    runs_root: Path, taxonomy: str, dataset: str, split: str, this_run: Path, classes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Runs beside `this_run` trained at `taxonomy` and evaluated on the same dataset and split, as their metrics.json
    says now (a file that does not parse is skipped; one written before metrics.json named its taxonomy counts when
    its classes are `classes`)."""
    found = []
    for other in sorted(p for p in runs_root.iterdir() if p.is_dir() and p != this_run):
        path = evaluation_dir(other, dataset, split) / "metrics.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        summary = metrics.get("summary") if isinstance(metrics, dict) else None
        named = metrics.get("taxonomy") if isinstance(metrics, dict) else None
        same = named == taxonomy or (not named and bool(classes) and metrics.get("classes") == list(classes))
        if same and isinstance(summary, dict):
            found.append(
                {"run": other.name, "miou": summary.get("miou"), "pixel_accuracy": summary.get("pixel_accuracy"),
                 "scored_images": metrics.get("scored_images")}
            )  # fmt: skip
    return found


def window_setting(spec: CheckpointSpec, window: int | None, window_stride: int | None) -> tuple[int, int]:
    """Window size and largest step: the run's unless given; a window given alone gets its own fewest windows."""
    if window:
        return window, default_window_stride(window, window_stride)
    return spec.window, window_stride or spec.window_stride


def evaluate_run(options: EvaluateOptions, out: TextIO = sys.stdout) -> SplitReport:
    """Predict, score and write back one split; returns the report (also written under the run)."""
    if options.split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, not {options.split!r}")
    check_name(options.dataset, "dataset name", "pass --dataset with a FiftyOne dataset's name")
    run_dir = options.run_dir.expanduser().resolve()
    runtime = resolve_runtime(options.device, options.precision)
    tensors, spec = read_checkpoint(run_dir, options.which)
    with run_lock(run_dir):
        plan = plan_evaluation(options, run_dir, spec, out)
        # the backbone (seconds, more for real weights) only once the dataset, split and ground truth are known right
        model = build_model(tensors, spec, run_dir, weights=options.weights)
        del tensors  # a fine-tuned checkpoint's copy of the backbone is not kept beside the model's
        with loaded_objects_frozen():  # the loop and the FiftyOne write after it
            return _evaluate_run(options, run_dir, runtime, model, spec, plan, out)


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held while one command writes a run's evaluation files and FiftyOne fields (an evaluation or a --delete).

    A missing run folder is not created for it (`--delete` of a run whose folder is gone still works).
    """
    if not run_dir.is_dir():
        return contextlib.nullcontext()
    lock = run_dir / EVAL_DIR / LOCK_FILE
    return exclusive_lock(
        lock,
        f"another evaluation of {run_dir.name} is running ({lock} is held); wait for it to end or stop it, then rerun",
    )


@dataclass
class EvaluationPlan:
    """What one evaluation will predict and score, every part of it checked before anything is built or written."""

    taxonomy: Taxonomy
    classes: list[str]
    palette: list[list[int]]
    background: int | None
    window: int
    window_stride: int
    prepared: PreparedDataset | None  # None: no ground truth, predict only
    entries: dict[str, ManifestEntry]  # by sample id; empty without `prepared`
    dataset: Any  # fo.Dataset
    sample_ids: list[str]
    fields: RunFields


def plan_evaluation(options: EvaluateOptions, run_dir: Path, spec: CheckpointSpec, out: TextIO) -> EvaluationPlan:
    """The taxonomy, ground truth, dataset and split of an evaluation, checked on the checkpoint's spec alone."""
    taxonomy = load_taxonomy(spec.taxonomy, list(options.taxonomy_dirs))
    classes, palette = list(spec.classes), run_palette(spec, taxonomy)
    background = classes.index(BACKGROUND_NAME) if BACKGROUND_NAME in classes else None
    window, window_stride = window_setting(spec, options.window, options.window_stride)
    prepared = find_prepared(options, spec, out)
    entries = {e.sample_id: e for e in prepared.entries} if prepared else {}
    dataset = writeback.load_dataset(options.dataset)
    sample_ids = writeback.sample_ids_for_split(dataset, options.split, {i: e.split for i, e in entries.items()})
    if not sample_ids:
        raise UserError(
            f"dataset {options.dataset!r} has no sample in split {options.split!r}; choose another --split or tag samples with it"
        )
    for sample_id in sample_ids:  # a damaged ground-truth mask is refused before anything is written
        if prepared is not None and sample_id in entries:
            prepared.check_mask(entries[sample_id])
    return EvaluationPlan(
        taxonomy, classes, palette, background, window, window_stride, prepared, entries, dataset, sample_ids,
        RunFields.for_run(run_dir.name),
    )  # fmt: skip


def _evaluate_run(
    options: EvaluateOptions,
    run_dir: Path,
    runtime: Runtime,
    model: torch.nn.Module,
    spec: CheckpointSpec,
    plan: EvaluationPlan,
    out: TextIO,
) -> SplitReport:
    taxonomy, classes, palette, background = plan.taxonomy, plan.classes, plan.palette, plan.background
    window, window_stride, prepared, entries = plan.window, plan.window_stride, plan.prepared, plan.entries
    dataset, sample_ids, fields = plan.dataset, plan.sample_ids, plan.fields
    writeback.begin_run(dataset, fields, run_dir, options.split, spec.taxonomy)
    writeback.configure_app(dataset, fields, spec.taxonomy, classes, palette)

    device = runtime.device
    forward = window_forward(model.to(device).eval(), runtime, tta=False)  # the mirror is part of `augmentation`
    augmentation = options.augmentation
    out_dir = evaluation_dir(run_dir, options.dataset, options.split)
    mask_palette = png_palette(palette)
    depends_on = {
        "head": sha256_file(checkpoint_stem(run_dir, options.which).with_suffix(".safetensors")), "backbone": spec.weights_hash,
        "window": window, "window_stride": window_stride, "layout": WINDOW_LAYOUT, "tta": _tta_key(augmentation), "bf16": runtime.bf16, "device": device.type,
    }  # fmt: skip
    cache = PredictionCache(out_dir / CACHE_FILE, depends_on)
    images, used_names, reused = [], set[str](), 0
    quadrats: dict[str, list[QuadratSummary]] = {"gt": [], "scored": [], "all": []}  # small: covers and sizes only
    for sample_id in progress(sample_ids, desc=f"evaluate {run_dir.name} on {options.split}", unit="image", file=out):
        sample = dataset[sample_id]
        mask_path = out_dir / "masks" / _mask_name(sample.filepath, sample_id, used_names)
        predicted, colonies, was_cached = _predict_or_reuse(
            cache,
            forward,
            sample_id,
            sample.filepath,
            mask_path,
            len(classes),
            window,
            window_stride,
            options.batch_size,
            device,
            mask_palette,
            augmentation,
        )
        reused += was_cached
        height, width = predicted.shape
        polylines = writeback.colonies_to_polylines(colonies, classes, width, height)
        predicted_quadrat = _quadrat(
            sample, predicted, [(c.class_index, c.polygon) for c in colonies], classes, options.quadrat
        )
        quadrats["all"].append(predicted_quadrat)
        result = ImageResult(
            Path(sample.filepath).name, sample_id, cover_percent(predicted, len(classes)), None, *_site_year(sample)
        )
        entry = entries.get(sample_id)
        if entry is None or prepared is None:  # no ground truth (entries is empty without a prepared folder)
            writeback.write_sample(sample, fields, spec.taxonomy, mask_path, polylines)
        else:
            gt_mask = _ground_truth(prepared, entry, (height, width), sample.filepath)
            result.matrix = confusion_matrix(gt_mask, predicted, len(classes))
            scores = compute_metrics(result.matrix, classes, background)
            gt_polylines = sample[options.gt_field] if sample.has_field(options.gt_field) else None
            gt = writeback.gt_colonies(gt_polylines, taxonomy, classes)
            quadrats["gt"].append(
                _quadrat(sample, gt_mask, gt_colony_outlines(gt, classes, width, height), classes, options.quadrat)
            )
            quadrats["scored"].append(predicted_quadrat)
            writeback.write_sample(
                sample, fields, spec.taxonomy, mask_path, polylines,
                gt_mask_path=prepared.mask_path(entry),
                gt_polylines=gt,
                miou=None if np.isnan(scores.miou) else scores.miou,
                iou=writeback.image_scores_document(scores.iou, classes),
            )  # fmt: skip
        images.append(result)
    cache.compact()
    if reused:
        print(
            f"reused {reused} earlier predictions made with the same checkpoint and settings ({out_dir / CACHE_FILE})",
            file=out,
        )

    settings_used: dict[str, Any] = {
        "prepared": str(prepared.root) if prepared else None, "checkpoint": options.which, "window": window,
        "window_stride": window_stride, "tta": options.tta, "tta_scales": list(augmentation.scales), "device": str(device), "precision": runtime.precision,
    }  # fmt: skip
    report = SplitReport(
        run_dir.name,
        options.split,
        classes,
        palette,
        background,
        images,
        settings=settings_used,
        dataset=options.dataset,
        taxonomy=spec.taxonomy,
    )
    report.levels = coarser_reports(report, taxonomy, options, run_dir)
    scored_ids = [image.sample_id for image in report.scored]
    if scored_ids:
        fiftyone_matrix, report.colonies = writeback.run_fiftyone_evaluations(
            dataset, scored_ids, fields, spec.taxonomy, classes, palette
        )
        settings_used["fiftyone_confusion_matrix_agrees"] = bool(np.array_equal(fiftyone_matrix, report.matrix))
        review_views = writeback.save_review_views(dataset, scored_ids, fields, spec.taxonomy, classes)
        writeback.save_review_workspace(dataset, fields)
        writeback.order_sidebar(dataset, fields, classes)
    survey_dir = out_dir / SPLIT_SURVEY_DIR
    if quadrats["gt"]:  # the quadrats with ground truth, their numbers from both sources
        sections = [write_split_survey(quadrats["gt"], quadrats["scored"], classes, palette, survey_dir)]
    else:
        write_survey_report({PREDICTION: quadrats["all"]}, classes, palette, survey_dir)
        sections = []
    write_report(report, out_dir, sections)
    print(format_per_class_table(report), file=out)
    print(f"report: {out_dir / 'report.md'}", file=out)
    if scored_ids:
        print(
            "saved views in the App (samples): " + ", ".join(f"{v.name} ({v.samples})" for v in review_views), file=out
        )
        print(
            f"browse, worst images first: python evaluate/app.py {options.dataset} {fields.app_arguments}",
            file=out,
        )
    else:
        print(f"browse: python evaluate/app.py {options.dataset}", file=out)
    return report
