"""Predict a whole survey with a trained run: masks, colonies, uncertainty, cover, sizes and points.

    python evaluate/predict.py --run runs/<name> --dataset moorea_2024 [--tags new] [--view my_view]
    torchrun --nproc_per_node=4 evaluate/predict.py runs/<name> --dataset moorea_2024   # the run first: torchrun
                                                      # takes an abbreviated --run for its own --run-path

Under torchrun each process takes every N-th image (its shard), decodes on DataLoader workers,
predicts on its own GPU and appends to its own journal (`predictions.rank<r>.jsonl`); once all
are done, process 0 alone reads the journals, writes FiftyOne and the survey report. A killed run
continues where it stopped, and an image whose file, checkpoint and settings are unchanged is
never predicted twice (the journal says so). Memory is flat in the number of images: masks go to
palette PNGs one at a time, and only each image's small summary is kept.

Files: `runs/<run>/predict/<dataset>/` (docs/survey.md): `masks/`, the journals, the survey report
files, `quadrats.csv` (uncertainty per image, most doubtful first), `points.csv` with `--points N`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from common.cli import UserError
from common.fileio import exclusive_lock, sha256_file, write_text_atomic
from common.images import read_image
from common.names import check_name
from common.processes import spawned_pool
from common.runtime import Runtime, loaded_objects_frozen, resolve_runtime
from common.settings import Settings
from data_engineering import dataset_contract as contract
from data_engineering.coralnet_points import PointAnnotation, write_point_csv
from evaluate import writeback
from evaluate.colonies import Colony
from evaluate.ecology import QuadratScale, QuadratSummary, measure_quadrat, site_year_summary
from evaluate.fields import RunFields
from evaluate.finish import JOURNAL_LINE, Finished, finish_photo
from evaluate.inference import Prediction, predict_image, window_forward
from evaluate.pipeline import run_palette, window_setting
from evaluate.points import SAMPLING_MODES, sample_points
from evaluate.prediction_cache import PredictionCache, image_key
from evaluate.refine_sam import RefineSettings, refine_mask
from evaluate.sam_models import SamWeights, load_sam
from evaluate.survey_report import format_site_year_table, write_survey_report
from models.checkpoint import CheckpointSpec, build_model, checkpoint_stem, read_checkpoint
from models.sliding_window import WINDOW_LAYOUT, TestTimeAugmentation
from prepare.layout import png_palette
from prepare.mask_png import read_mask
from prepare.taxonomy import load_taxonomy, taxonomy_dirs

PREDICT_DIR = "predict"
JOURNAL = "predictions.rank{rank}.jsonl"
DEFAULT_UNCERTAINTY = 0.5  # a pixel whose winning class has a lower probability counts as doubtful


@dataclass(frozen=True)
class PredictOptions:
    """Everything one prediction of a survey needs, resolved at the command line."""

    run_dir: Path
    dataset: str
    tags: tuple[str, ...] = ()
    view: str | None = None
    which: str = "best"
    window: int | None = None
    window_stride: int | None = None
    batch_size: int = 4
    tta: bool = False
    tta_scales: tuple[float, ...] = (1.0,)  # models.sliding_window.TestTimeAugmentation's scales
    precision: str = "auto"
    weights: str | None = None
    quadrat: QuadratScale = field(default_factory=QuadratScale)
    uncertainty: float = DEFAULT_UNCERTAINTY
    points: int = 0
    point_sampling: str = "stratified"
    workers: int = 2
    seed: int = 0
    sam_weights: SamWeights | None = None  # refine each colony with SAM (`--refine sam`) when set
    sam: RefineSettings = field(default_factory=RefineSettings)


@dataclass(frozen=True)
class Shard:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def predict_dir(run_dir: Path, dataset: str) -> Path:
    """`runs/<run>/predict/<dataset>/`: one folder per (run, dataset), so no prediction replaces another's files."""
    return run_dir / PREDICT_DIR / check_name(dataset, "dataset name", "pass --dataset with a FiftyOne dataset's name")


def shard_of(items: Sequence[Any], shard: Shard) -> list[Any]:
    """Every `world`-th item from `rank`: shards of equal size within one, together exactly `items`."""
    return list(items[shard.rank :: shard.world])


def join_torchrun() -> Shard:
    """Join torchrun's process group when launched by it (gloo on CPU, NCCL on GPUs), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(shard: Shard) -> None:
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()


def shard_runtime(device: str, precision: str, shard: Shard) -> Runtime:
    """The runtime of this process: under torchrun each process gets the GPU of its local rank."""
    runtime = resolve_runtime(device, precision)
    if runtime.device.type == "cuda" and shard.world > 1:
        torch.cuda.set_device(shard.local_rank)
        return Runtime(torch.device("cuda", shard.local_rank), runtime.dtype)
    return runtime


@dataclass(frozen=True)
class Photo:
    sample_id: str
    filepath: str
    site: str | None
    year: int | None


class _Decoded(torch.utils.data.Dataset):
    """Photos decoded on DataLoader workers (as displayed: EXIF orientation applied), errors returned, not raised."""

    def __init__(self, photos: Sequence[Photo]) -> None:
        self.photos = list(photos)

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, read_image(self.photos[index].filepath, oriented=True), ""
        except UserError as error:
            return index, None, str(error)


def _as_is(item: Any) -> Any:
    return item


def decoded(photos: Sequence[Photo], workers: int) -> Iterator[tuple[Photo, np.ndarray | None, str]]:
    """(photo, pixels or None, why not) in order, decoded ahead on `workers` processes while the model runs."""
    loader = torch.utils.data.DataLoader(
        _Decoded(photos),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        collate_fn=_as_is,
    )
    for index, image, problem in loader:
        yield photos[index], image, problem


def image_stats(mask: np.ndarray, confidence: np.ndarray, threshold: float) -> dict[str, float]:
    """The doubt of one prediction: mean winning-class probability, and the share of pixels below `threshold`."""
    return {"mean_confidence": float(confidence.mean()), "uncertain_share": float((confidence < threshold).mean())}


def select_photos(dataset: Any, options: PredictOptions) -> list[Photo]:
    """The samples to predict: a saved view, or samples with any of the tags, or the whole dataset."""
    view = dataset
    if options.view:
        if not dataset.has_saved_view(options.view):
            views = ", ".join(dataset.list_saved_views()) or "none"
            raise UserError(f"dataset {dataset.name!r} has no saved view {options.view!r}; saved views: {views}")
        view = dataset.load_saved_view(options.view)
    if options.tags:
        view = view.match_tags(list(options.tags))
    if not len(view):
        raise UserError(
            f"nothing to predict in {dataset.name!r} with {'view ' + options.view if options.view else ''}"
            f"{' tags ' + ','.join(options.tags) if options.tags else ''}; check --view / --tags"
        )
    ids, paths = view.values("id"), view.values("filepath")
    sites = view.values(contract.SITE) if dataset.has_sample_field(contract.SITE) else [None] * len(ids)
    years = (
        [contract.read_year(y) for y in view.values(contract.YEAR)]
        if dataset.has_sample_field(contract.YEAR)
        else [None] * len(ids)
    )
    return [Photo(*row) for row in zip(ids, paths, sites, years)]


@dataclass
class ShardSummary:
    """What one process did, with the seconds each part of the per-photo work took (`parts`)."""

    predicted: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[part] = self.parts.get(part, 0.0) + time.perf_counter() - start


def _timed_iter(items: Iterator[Any], summary: ShardSummary, part: str) -> Iterator[Any]:
    """`items`, the time spent waiting for each one counted as `part` (decoding, when workers fall behind)."""
    while True:
        with summary.timing(part):
            item = next(items, None)
        if item is None:
            return
        yield item


def predict_shard(
    photos: Sequence[Photo],
    options: PredictOptions,
    runtime: Runtime,
    model: torch.nn.Module,
    spec: CheckpointSpec,
    palette: Sequence[Sequence[int]],
    out_dir: Path,
    shard: Shard,
    cache: PredictionCache,
    out: TextIO,
) -> ShardSummary:
    """Predict this process's photos into its journal (`cache`), skipping those it already holds unchanged."""
    from common.progress import progress

    window, window_stride = window_setting(spec, options.window, options.window_stride)
    summary = ShardSummary()
    todo = []
    for photo in photos:
        if cache.get(photo.sample_id, image_key(photo.filepath), mask_path(out_dir, photo)) is not None:
            summary.reused += 1
        else:
            todo.append(photo)
    if not todo:
        return summary
    forward = window_forward(model.to(runtime.device).eval(), runtime, options.tta)
    sam = load_sam(options.sam_weights, runtime) if options.sam_weights else None
    mask_palette = png_palette(palette)
    start = time.perf_counter()
    desc = f"predict {options.run_dir.name}" + (f" [{shard.rank + 1}/{shard.world}]" if shard.world > 1 else "")
    photos_in = _timed_iter(iter(decoded(todo, options.workers)), summary, "decode (waiting for workers)")
    pool, in_hand = finishing_pool(runtime.device)
    pending: deque[Future[Finished]] = deque()

    def record(future: Future[Finished]) -> None:  # the journal line of a finished photo, and its parts' seconds
        with summary.timing(WAITING):
            try:
                finished = future.result()
            except BrokenProcessPool:
                raise UserError(
                    "a worker process making the photos' masks and colonies stopped unexpectedly (out of memory?); "
                    "rerun the same command: it resumes after the photos already done"
                ) from None
        with summary.timing(JOURNAL_LINE):
            cache.append(finished.header, finished.line)
        for part, seconds in finished.seconds.items():
            summary.parts[part] = summary.parts.get(part, 0.0) + seconds
        summary.predicted += 1

    # the PNG, colonies and journal line of photo i are made beside the model predicting photo i+1 (the model
    # waits only for a photo whose colonies take longer than its prediction, `in_hand` photos at a time: memory
    # stays flat); an interrupted run still appends the journal lines of the photos in hand
    with pool:
        try:
            for photo, image, problem in progress(photos_in, total=len(todo), desc=desc, unit="image", file=out):
                if image is None:
                    summary.unreadable.append(f"{photo.filepath}: {problem}")
                    continue
                with summary.timing("model (sliding windows)"):
                    prediction = predict_image(
                        forward, image, spec.num_classes, window, window_stride, options.batch_size, runtime.device,
                        TestTimeAugmentation(options.tta_scales),
                    )  # fmt: skip
                stats = image_stats(prediction.mask, prediction.confidence, options.uncertainty)
                if sam is not None:
                    with summary.timing("SAM refinement"):
                        refined = refine_mask(sam, image, prediction.mask, spec.num_classes, options.sam)
                    prediction = Prediction(refined.mask, prediction.confidence)  # the doubt stays the semantic model's
                    stats.update(sam_prompted=refined.prompted, sam_kept=refined.kept)
                while len(pending) >= in_hand:
                    record(pending.popleft())
                pending.append(
                    pool.submit(
                        finish_photo,
                        cache.key,
                        photo.sample_id,
                        image_key(photo.filepath),
                        prediction.mask,
                        prediction.confidence,
                        stats,
                        mask_path(out_dir, photo),
                        mask_palette,
                    )
                )
        finally:
            while pending:
                record(pending.popleft())
    summary.seconds = time.perf_counter() - start
    cache.compact()
    return summary


def finishing_processes(device: torch.device) -> int:
    """Worker processes making the PNGs, colonies and journal lines: none on a CPU (one thread: torch has the
    cores, and a process or a core lent measured slower, benchmarks/README.md); beside a GPU a quarter of this
    process's share of the machine's cores (torchrun's processes on one node share them), 1 to 4."""
    if device.type == "cpu":
        return 0
    share = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(4, max(1, share // 4))


def finishing_pool(device: torch.device) -> tuple[Executor, int]:
    """Where `evaluate.finish.finish_photo` runs, and how many photos may be in hand there at once."""
    processes = finishing_processes(device)
    if not processes:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict-finish"), 1
    return spawned_pool(processes), processes


WAITING = "waiting for PNG, colonies, journal"  # what the finishing work adds to the wall time
WRITE = "journals gathered, FiftyOne write (all photos)"
SETUP = "FiftyOne run record and App set-up (once)"
MEASURE = "quadrat summaries (cover, colony sizes)"
REPORT = "survey report (all photos)"
WRITE_BATCH = 64  # photos whose colonies are in memory at once while they are written to FiftyOne


def mask_path(out_dir: Path, photo: Photo) -> Path:
    """A photo's predicted mask: named by sample id, so two photos with one file name never share a file."""
    return out_dir / "masks" / f"{photo.sample_id}.png"


def depends_on(
    options: PredictOptions, runtime: Runtime, spec: CheckpointSpec, window: int, window_stride: int
) -> dict[str, Any]:
    """Everything a journal entry's prediction depended on besides the image file itself."""
    key: dict[str, Any] = {
        "head": sha256_file(checkpoint_stem(options.run_dir, options.which).with_suffix(".safetensors")),
        "backbone": spec.weights_hash,
        "window": window,
        "window_stride": window_stride,
        "layout": WINDOW_LAYOUT,
        "tta": options.tta,
        **({"tta_scales": list(options.tta_scales)} if tuple(options.tta_scales) != (1.0,) else {}),
        "precision": runtime.precision,
        "device": runtime.device.type,
        "uncertainty": options.uncertainty,
    }
    if options.sam_weights is not None:  # only then, so journals of unrefined predictions stay valid
        key["refine"] = {"method": "sam", "weights": options.sam_weights.sha256, **asdict(options.sam)}
    return key


@dataclass(frozen=True)
class PhotoResult:
    photo: Photo
    mask_path: Path
    colonies: list[Colony]
    stats: dict[str, float]


def journal(
    out_dir: Path, rank: int, options: PredictOptions, runtime: Runtime, spec: CheckpointSpec
) -> PredictionCache:
    """Process `rank`'s journal, its entries valid for these options, this runtime and this checkpoint only."""
    window, window_stride = window_setting(spec, options.window, options.window_stride)
    return PredictionCache(
        out_dir / JOURNAL.format(rank=rank), depends_on(options, runtime, spec, window, window_stride)
    )


def gather(photos: Sequence[Photo], out_dir: Path, journals: Sequence[PredictionCache]) -> list[PhotoResult]:
    """Every process's journal entries, in the order of `photos` (photos without a prediction are left out)."""
    results = []
    for photo in photos:
        path = mask_path(out_dir, photo)
        for cache in journals:
            colonies = cache.get(photo.sample_id, image_key(photo.filepath), path)
            if colonies is not None:
                results.append(PhotoResult(photo, path, colonies, cache.stats(photo.sample_id)))
                break
    return results


def write_back(dataset: Any, fields: RunFields, results: Sequence[PhotoResult], classes: Sequence[str]) -> None:
    """Masks, colonies and doubt of every predicted photo into FiftyOne, one bulk write per field. The colonies go
    as stored documents (`colonies_document`): as Label objects they took longer than the model; each photo's size
    comes from its PNG's header, not a decoded mask."""
    import fiftyone as fo

    masks, colonies = {}, {}
    for r in results:
        masks[r.photo.sample_id] = fo.Segmentation(mask_path=str(r.mask_path)).to_dict()
        width, height = png_size(r.mask_path)
        colonies[r.photo.sample_id] = writeback.colonies_document(r.colonies, classes, width, height)
    writeback.set_label_documents(dataset, fields.prediction, fo.Segmentation, masks)
    writeback.set_label_documents(dataset, fields.colonies, fo.Polylines, colonies)
    for name, stat in ((fields.mean_confidence, "mean_confidence"), (fields.uncertain_share, "uncertain_share")):
        dataset.set_values(name, {r.photo.sample_id: r.stats.get(stat) for r in results}, key_field="id")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG from its header, without decoding its pixels."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def quadrat_summary(result: PhotoResult, num_classes: int, scale: QuadratScale) -> tuple[QuadratSummary, bool]:
    """Cover and colony sizes of one predicted photo, and whether it has the quadrat's proportions."""
    mask, photo = read_mask(result.mask_path), result.photo
    colonies = [(c.class_index, c.polygon) for c in result.colonies]
    summary = measure_quadrat(Path(photo.filepath).name, photo.site, photo.year, mask, colonies, num_classes, scale)
    return summary, scale.fits(*mask.shape)


def warn_not_quadrats(odd: Sequence[str], scale: QuadratScale, out: TextIO) -> None:
    """One warning naming the photos not of the quadrat's proportions (predicted, but their sizes assume it)."""
    if odd:
        print(
            f"warning: {len(odd)} photo(s) are not of the quadrat's proportions ({', '.join(odd[:3])}"
            f"{'...' if len(odd) > 3 else ''}); they were predicted, but their colony sizes assume each covers the whole "
            f"{scale.width_m:g} m x {scale.height_m:g} m quadrat: check --quadrat-size",
            file=out,
        )


def quadrats_csv(results: Sequence[PhotoResult], summaries: Sequence[QuadratSummary], classes: Sequence[str]) -> str:
    """One row per photo, the most doubtful first, so the quadrats worth annotating next are at the top."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["sample_id", "image", "site", "year", "uncertain_share", "mean_confidence", "colonies"]
        + [f"cover_{name}" for name in classes]
    )
    order = sorted(range(len(results)), key=lambda i: -results[i].stats.get("uncertain_share", 0.0))
    for i in order:
        r, s = results[i], summaries[i]
        writer.writerow(
            [
                r.photo.sample_id,
                s.image,
                s.site or "",
                s.year or "",
                round(r.stats.get("uncertain_share", 0.0), 4),
                round(r.stats.get("mean_confidence", 0.0), 4),
                len(s.colonies),
            ]
            + [round(float(v), 3) for v in s.cover]
        )
    return buffer.getvalue()


def sampled_points(
    results: Sequence[PhotoResult], classes: Sequence[str], options: PredictOptions
) -> list[PointAnnotation]:
    """`options.points` points per photo sampled from its predicted mask, labelled with the predicted class."""
    points = []
    for index, r in enumerate(results):
        mask = read_mask(r.mask_path)
        for row, column in sample_points(mask.shape, options.points, options.point_sampling, seed=options.seed + index):
            value = int(mask[row, column])
            points.append(
                PointAnnotation(
                    Path(r.photo.filepath).name,
                    int(row),
                    int(column),
                    classes[value] if value < len(classes) else "ignore",
                )
            )
    return points


def predict_survey(settings: Settings, options: PredictOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Predict the selected photos (this process's shard under torchrun) and, on process 0, report them."""
    check_options(options)
    shard = join_torchrun()
    run_dir = options.run_dir.expanduser().resolve()
    runtime = shard_runtime(settings.device, options.precision, shard)
    tensors, spec = read_checkpoint(run_dir, options.which)
    taxonomy = load_taxonomy(spec.taxonomy, taxonomy_dirs(settings.taxonomy_dirs))
    classes, palette = list(spec.classes), run_palette(spec, taxonomy)
    dataset = writeback.load_dataset(options.dataset)
    fields = RunFields.for_run(run_dir.name)
    if shard.main:
        writeback.check_owner(dataset, fields, run_dir, spec.taxonomy)
        check_earlier_taxonomy(dataset, fields, run_dir, spec.taxonomy)
    photos = select_photos(dataset, options)
    # the backbone (seconds, more for real weights) only once the dataset and the selection are known to be right
    model = build_model(tensors, spec, run_dir, weights=options.weights or settings.dino_weights or None)
    del tensors  # a fine-tuned checkpoint's copy of the backbone is not kept beside the model's
    out_dir = predict_dir(run_dir, options.dataset)
    lock = (
        exclusive_lock(
            out_dir / ".lock",
            f"another prediction of {run_dir.name} on {options.dataset} is running; "
            "wait for it to end or stop it, then rerun",
        )
        if shard.world == 1
        else contextlib.nullcontext()
    )
    with lock, loaded_objects_frozen():  # the loop, the FiftyOne write and the report (docs/survey.md)
        own = journal(out_dir, shard.rank, options, runtime, spec)
        summary = predict_shard(
            shard_of(photos, shard), options, runtime, model, spec, palette, out_dir, shard, own, out
        )
        _barrier(shard)  # every shard's journal is complete before process 0 reads them
        if not shard.main:
            return {"rank": shard.rank, "predicted_now": summary.predicted, "seconds": summary.seconds}
        with summary.timing(WRITE):
            # this process's journal index is in memory already; the others' are read back
            journals = [own] + [journal(out_dir, rank, options, runtime, spec) for rank in range(1, shard.world)]
        with summary.timing(SETUP):
            writeback.record_prediction(dataset, fields, run_dir, spec.taxonomy)
            writeback.configure_app(dataset, fields, spec.taxonomy, classes, palette)
        results: list[PhotoResult] = []
        summaries: list[QuadratSummary] = []
        odd: list[str] = []
        for start in range(0, len(photos), WRITE_BATCH):  # a batch's colonies at a time: memory flat over the survey
            with summary.timing(WRITE):
                batch = gather(photos[start : start + WRITE_BATCH], out_dir, journals)
                write_back(dataset, fields, batch, classes)
            with summary.timing(MEASURE):
                for r in batch:
                    quadrat, fits = quadrat_summary(r, len(classes), options.quadrat)
                    summaries.append(quadrat)
                    if not fits:
                        odd.append(quadrat.image)
            results += [replace(r, colonies=[]) for r in batch]  # what the tables need: photo, mask, stats
        with summary.timing(REPORT):
            warn_not_quadrats(odd, options.quadrat, out)
            write_survey_report({"prediction": summaries}, classes, palette, out_dir, seed=options.seed)
            table = format_site_year_table(site_year_summary(summaries, classes, seed=options.seed))
            write_text_atomic(out_dir / "quadrats.csv", quadrats_csv(results, summaries, classes))
            if options.points:
                write_text_atomic(out_dir / "points.csv", write_point_csv(sampled_points(results, classes, options)))
    rate = summary.predicted / summary.seconds if summary.seconds else 0.0
    report = {
        "photos": len(photos),
        "predicted": len(results),
        "predicted_now": summary.predicted,
        "reused": summary.reused,
        "unreadable": summary.unreadable,
        "seconds": summary.seconds,
        "images_per_second": rate,
        "out_dir": str(out_dir),
        "site_year_table": table,
        "parts": summary.parts,
    }
    return report


def check_earlier_taxonomy(dataset: Any, fields: RunFields, run_dir: Path, taxonomy: str) -> None:
    """Refuse to add predictions of one taxonomy to a dataset holding this run's predictions of another: the
    samples left out of this selection would keep masks whose class indices mean other classes."""
    earlier = writeback.evaluations(dataset).get(fields.eval_key, {}).get("taxonomy")
    if earlier not in (None, taxonomy):
        raise UserError(
            f"dataset {dataset.name!r} holds predictions of {run_dir.name} made with taxonomy {earlier!r}, but the run now "
            f"predicts {taxonomy!r}; remove them first with python evaluate/evaluate.py --run {run_dir} --dataset "
            f"{dataset.name} --delete, or give this run another folder name"
        )


def check_options(options: PredictOptions) -> None:
    """Refuse settings that cannot work before any model is loaded."""
    TestTimeAugmentation(options.tta_scales)  # refuses scales that are not positive
    if not 0 < options.uncertainty <= 1:
        raise UserError(f"--uncertainty must be a probability in (0, 1], not {options.uncertainty}")
    if options.points < 0:
        raise UserError(f"--points must be 0 (none) or a positive number of points per image, not {options.points}")
    if options.point_sampling not in SAMPLING_MODES:
        raise UserError(f"--point-sampling must be one of {', '.join(SAMPLING_MODES)}, not {options.point_sampling!r}")
    if options.batch_size < 1 or options.workers < 0:
        raise UserError("--batch-size must be positive and --workers 0 or more")
    if options.sam.positive_points < 1 or options.sam.negative_points < 0:
        raise UserError("--sam-points must be 1 or more and --sam-negative-points 0 or more")
