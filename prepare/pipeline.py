"""Build a prepared-dataset folder from samples and their polygons: incremental, resumable, parallel.

The source (FiftyOne, in `fiftyone_source`) hands over light `SampleRecord`s for every sample and,
chunk by chunk, each sample's `Annotation`s, so memory stays flat in the number of images. Each
sample gets a `source_key` (a hash of everything its outputs depend on); a rerun redoes only the
samples whose key changed, moves those whose split changed, and says so when nothing did. Every
finished sample is appended to a journal, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.cli import UserError
from common.fileio import atomic_path, make_dirs, sha256_file, write_bytes_atomic
from common.image_files import DAMAGED, MAX_IMAGE_PIXELS, TOO_LARGE, UNREADABLE, ImageProblem, check_image
from common.names import check_file_name
from common.processes import spawned_pool
from common.progress import progress as progress_bar
from common.settings import REPO_ROOT
from common.table import format_table
from prepare import layout
from prepare.mask_png import encode_mask_png, replace_palette
from prepare.rasterize import RULES, RULES_VERSION, Shape, polygon_from_rings, rasterize_shapes, to_pixels
from prepare.splits import (
    SplitSample,
    check_split_policy,
    grouped_split,
    leave_site_out_split,
    parse_ratios,
    split_by_tags,
)
from prepare.taxonomy import Taxonomy, resolve_labels


@dataclass(frozen=True)
class SampleRecord:
    """What is known about a sample before its polygons are read."""

    sample_id: str
    filepath: str
    width: int | None  # recorded in the dataset's metadata, None when absent
    height: int | None
    tags: tuple[str, ...] = ()
    group: Hashable = None  # samples sharing a group (site, quadrat) share a split; None = its own group
    labels: tuple[str, ...] = ()  # raw label of every polygon
    site: str | None = None  # the sample's site, for --split-policy leave-site-out


@dataclass(frozen=True)
class Annotation:
    """One ground-truth polygon: raw label, normalized rings (a polyline may hold several), CVAT z_order."""

    label: str
    rings: tuple[np.ndarray, ...]
    z_order: int = 0


IMAGE_PROBLEMS = {  # left-out reasons by ImageProblem kind, so the summary groups images by what is wrong
    UNREADABLE: "image file unreadable",
    DAMAGED: "image file truncated or damaged (it does not decode completely); export or copy it again",
    TOO_LARGE: f"image header claims more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels (a decompression bomb or not a quadrat photo)",
}
IMAGES_PER_WORKER = 50  # starting a worker process costs ~0.6 s, about 40 masks' work: fewer images run in one process
AnnotationReader = Callable[[Sequence[str]], Iterable[tuple[str, list[Annotation]]]]


@dataclass(frozen=True)
class PrepareOptions:
    taxonomy: Taxonomy
    output_dir: Path
    source: dict[str, Any]  # describes the source dataset in dataset_info.json; needs "dataset"
    split_policy: str = "tags"
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1)
    seed: int = 0
    site: str | None = None  # the site held out as the test set under leave-site-out
    unknown: str = "error"
    overwrite: bool = False
    workers: int = 1


@dataclass
class PrepareReport:
    """What a run did, for the summary the CLI prints."""

    assignment: dict[str, str]  # sample id -> split
    entries: list[layout.ManifestEntry]
    written: int = 0
    up_to_date: int = 0
    moved: int = 0
    recoloured: int = 0
    repaired: int = 0  # masks redrawn because the file no longer matched the manifest's mask_sha256
    removed: int = 0
    degenerate: int = 0
    left_out: dict[str, list[str]] = field(default_factory=dict)  # reason -> sample ids (or file paths)
    empty_splits: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nothing_changed(self) -> bool:
        return self.written == self.moved == self.removed == self.recoloured == 0


@dataclass(frozen=True)
class MaskJob:
    """Everything a worker needs to produce one sample's mask and image link (picklable, no FiftyOne)."""

    sample_id: str
    split: str
    root: str
    source_image: str
    image: str
    mask: str
    recorded_size: tuple[int, int] | None
    shapes: tuple[tuple[int, int, tuple[np.ndarray, ...]], ...]  # (value, z_order, normalized rings)
    palette: bytes
    source_key: str
    palette_key: str


@dataclass(frozen=True)
class MaskResult:
    source_image: str
    entry: layout.ManifestEntry | None
    degenerate: int = 0
    problem: str = ""  # why the sample was left out, when entry is None


def prepare_dataset(
    records: Sequence[SampleRecord], read_annotations: AnnotationReader, options: PrepareOptions
) -> PrepareReport:
    """Write (or bring up to date) the prepared folder for `records`; see docs/prepared_dataset.md."""
    if not records:
        raise UserError(
            f"dataset {options.source.get('dataset')!r} has no samples; import annotations with data_engineering first"
        )
    taxonomy = options.taxonomy
    label_map = resolve_labels(
        taxonomy, Counter(label for r in records for label in r.labels), options.unknown, layout.IGNORE_INDEX
    )
    report = PrepareReport(assignment={}, entries=[])
    report.assignment = _choose_splits(records, label_map, options, report)

    root = options.output_dir.expanduser().resolve()
    _claim_folder(root, str(options.source.get("dataset")), options.overwrite)
    for split in layout.SPLITS:
        for folder in (root / split / layout.IMAGES_DIR, root / split / layout.MASKS_DIR):
            make_dirs(folder)
            for leftover in folder.glob(".*.part*"):  # temporary files of a run that was killed mid-write
                leftover.unlink()
    previous = {e.sample_id: e for e in layout.read_manifest(root / layout.MANIFEST_FILE)}
    previous |= {e.sample_id: e for e in layout.read_manifest(root / layout.JOURNAL_FILE)}

    by_id = {r.sample_id: r for r in records}
    chosen = [by_id[i] for i in report.assignment]
    names = _output_names(chosen)
    palette = layout.png_palette([layout.BACKGROUND_COLOR, *taxonomy.colors])
    entries: dict[str, layout.ManifestEntry] = {}
    with (
        open(root / layout.JOURNAL_FILE, "a", encoding="utf-8") as journal,
        progress_bar(total=len(chosen), desc="masks", unit="mask") as progress,
    ):

        def finish(entry: layout.ManifestEntry) -> None:
            entries[entry.sample_id] = entry
            journal.write(entry.to_json() + "\n")
            journal.flush()

        def plan() -> Iterator[MaskJob]:
            """Jobs for the samples whose outputs are stale; up-to-date ones are kept or moved on the way."""
            for sample_id, annotations in read_annotations([r.sample_id for r in chosen]):
                record, split = by_id[sample_id], report.assignment[sample_id]
                _refuse_non_finite(record, annotations)
                job = _job(record, split, annotations, label_map, names[sample_id], root, palette)
                old = previous.get(sample_id)
                if job is None:
                    report.left_out.setdefault("image file missing", []).append(record.filepath)
                elif (
                    old
                    and old.source_key == job.source_key
                    and _outputs_exist(root, old)
                    and _mask_intact(root, old, report)
                ):
                    if old.palette_key != job.palette_key:
                        old = _recolour(root, old, job)
                        report.recoloured += 1
                    if (old.split, old.image, old.mask) != (split, job.image, job.mask):
                        old = _move(root, old, split, job.image, job.mask)
                        report.moved += 1
                    if old is previous[sample_id]:
                        entries[sample_id] = old
                        report.up_to_date += 1
                    else:
                        finish(old)
                else:
                    yield job
                    continue
                progress.update()

        for result in _run_jobs(plan(), min(options.workers, len(chosen) // IMAGES_PER_WORKER)):
            progress.update()
            report.degenerate += result.degenerate
            if result.entry is None:
                report.left_out.setdefault(result.problem, []).append(result.source_image)
                continue
            finish(result.entry)
            report.written += 1

    report.entries = list(entries.values())
    report.removed = _remove_stale(root, previous.values(), report.entries)
    report.empty_splits = [s for s in layout.SPLITS if s not in {e.split for e in report.entries}]
    report.info = _info(taxonomy, options, report)
    layout.write_metadata(root, taxonomy.classes, taxonomy.colors, report.info, report.entries)
    (root / layout.JOURNAL_FILE).unlink(missing_ok=True)
    return report


def _choose_splits(
    records: Sequence[SampleRecord], label_map: dict[str, int | None], options: PrepareOptions, report: PrepareReport
) -> dict[str, str]:
    finest = options.taxonomy.finest_class
    samples = [
        SplitSample(
            sample_id=r.sample_id,
            tags=r.tags,
            group=("group", r.group) if r.group is not None else ("sample", r.sample_id),
            classes=frozenset(
                finest.get(label, label)
                for label in r.labels
                if label_map[label] not in (None, layout.BACKGROUND_INDEX)
            ),
            site=r.site,
        )
        for r in records
    ]
    check_split_policy(options.split_policy, options.site)
    if options.split_policy == "grouped":
        return grouped_split(samples, layout.SPLITS, parse_ratios(options.ratios), options.seed)
    if options.split_policy == "leave-site-out":
        assert options.site is not None  # check_split_policy
        return leave_site_out_split(samples, layout.SPLITS, parse_ratios(options.ratios), options.seed, options.site)
    chosen, untagged, conflicting = split_by_tags(samples, layout.SPLITS)
    by_id = {r.sample_id: r.filepath for r in records}
    if untagged:
        report.left_out["no train/val/test tag"] = [by_id[i] for i in untagged]
    if conflicting:
        report.left_out["several split tags"] = [by_id[i] for i in conflicting]
    if not chosen:
        raise UserError(
            "no sample has a train, val or test tag; tag them in FiftyOne or rerun with --split-policy grouped"
        )
    return chosen


def _claim_folder(root: Path, dataset: str, overwrite: bool) -> None:
    """Make `root` ours for `dataset`: refuse a folder holding anything else unless `overwrite` (which empties it)."""
    owner = root / layout.OWNER_FILE
    if root.is_dir() and any(root.iterdir()):
        owner_dataset = json.loads(owner.read_text(encoding="utf-8")).get("dataset") if owner.is_file() else None
        if owner_dataset != dataset and not overwrite:
            what = f"a dataset prepared from {owner_dataset!r}" if owner_dataset else "files this tool did not write"
            raise UserError(
                f"{root} already holds {what}; choose another --output-dir, or pass --overwrite to empty it and start again"
            )
        if overwrite:
            if root in (Path(root.anchor), Path.home().resolve(), REPO_ROOT) or root in REPO_ROOT.parents:
                raise UserError(f"refusing to empty {root}; choose a dedicated --output-dir")
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    make_dirs(root)
    layout.write_if_changed(owner, json.dumps({"created_by": layout.CREATED_BY, "dataset": dataset}) + "\n")


def _output_names(records: Sequence[SampleRecord]) -> dict[str, tuple[str, str]]:
    """Sample id -> (image file name, mask stem): the image's own name, plus the sample id where two images share one."""
    seen = Counter(Path(r.filepath).name for r in records)
    names = {}
    for r in records:
        path = Path(r.filepath)
        stem = path.stem if seen[path.name] == 1 else f"{path.stem}__{r.sample_id}"
        for name in (stem + path.suffix, stem + layout.MASK_SUFFIX):
            check_file_name(
                name,
                f"the prepared file name for image {r.filepath}",
                "rename the image (in CVAT or the export) to a shorter name",
            )
        names[r.sample_id] = (stem + path.suffix, stem)
    return names


def _job(
    record: SampleRecord,
    split: str,
    annotations: Sequence[Annotation],
    label_map: dict[str, int | None],
    name: tuple[str, str],
    root: Path,
    palette: bytes,
) -> MaskJob | None:
    """The work for one sample, or None when its image is missing; `source_key` hashes every input of its outputs."""
    try:
        stat = os.stat(record.filepath)
    except OSError:
        return None
    shapes = tuple(
        (value, a.z_order, tuple(np.ascontiguousarray(ring, dtype=np.float64).reshape(-1, 2) for ring in a.rings))
        for a in annotations
        if (value := label_map.get(a.label)) is not None  # a label added since the records were read is skipped
    )
    recorded = (record.width, record.height) if record.width and record.height else None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        json.dumps([RULES_VERSION, os.path.abspath(record.filepath), stat.st_size, stat.st_mtime_ns, recorded]).encode()
    )
    for value, z_order, rings in shapes:
        digest.update(f"|{value},{z_order},{len(rings)}".encode())
        for ring in rings:
            digest.update(ring.tobytes() + b";")
    return MaskJob(
        sample_id=record.sample_id,
        split=split,
        root=str(root),
        source_image=os.path.abspath(record.filepath),
        image=layout.image_relpath(split, name[0]),
        mask=layout.mask_relpath(split, name[1]),
        recorded_size=recorded,
        shapes=shapes,
        palette=palette,
        source_key=digest.hexdigest(),
        palette_key=hashlib.blake2b(palette, digest_size=8).hexdigest(),
    )


def _refuse_non_finite(record: SampleRecord, annotations: Sequence[Annotation]) -> None:
    """Stop at a polygon with NaN or infinite points (older imports stored them; GEOS would fail on them in a worker)."""
    for annotation in annotations:
        if not all(np.isfinite(ring).all() for ring in annotation.rings):
            raise UserError(
                f"sample {record.sample_id} ({record.filepath}) has a {annotation.label!r} polygon with NaN or infinite "
                "coordinates, stored by an older version; re-import its CVAT task with data_engineering or delete that polyline"
            )


def make_mask(job: MaskJob) -> MaskResult:
    """Rasterize, encode and write one mask and link its image (runs in a worker process)."""
    try:
        width, height = check_image(job.source_image)  # every pixel: a truncated photo would train on grey
    except ImageProblem as error:
        return MaskResult(job.source_image, None, problem=IMAGE_PROBLEMS[error.kind])
    if job.recorded_size and job.recorded_size != (width, height):
        return MaskResult(
            job.source_image,
            None,
            problem="image size differs from the dataset's metadata (run compute_metadata(overwrite=True) if the image is right)",
        )
    shapes, degenerate, instances = [], 0, Counter[str]()
    for value, z_order, rings in job.shapes:
        geometry = polygon_from_rings([to_pixels(ring, width, height) for ring in rings])
        if geometry is None:
            degenerate += 1
            continue
        shapes.append(Shape(geometry, value, z_order))
        if value != layout.BACKGROUND_INDEX:  # a background label's polygon paints 0 in its place: not a colony
            instances[str(value)] += 1
    mask = rasterize_shapes(shapes, width, height, fill=layout.BACKGROUND_INDEX, out=_mask_buffer(height, width))
    png = encode_mask_png(mask, job.palette)
    root = Path(job.root)
    write_bytes_atomic(root / job.mask, png, fsync=False)  # fsync cost ~6 ms a mask; a power cut may need --overwrite
    link_image(Path(job.source_image), root / job.image)
    counts = pixel_counts(mask)
    entry = layout.ManifestEntry(
        sample_id=job.sample_id,
        split=job.split,
        image=job.image,
        mask=job.mask,
        width=width,
        height=height,
        source_image=job.source_image,
        image_sha256=sha256_file(job.source_image),
        mask_sha256=hashlib.sha256(png).hexdigest(),
        source_key=job.source_key,
        palette_key=job.palette_key,
        pixels={str(i): int(n) for i, n in enumerate(counts) if n},
        instances=dict(instances),
    )
    return MaskResult(job.source_image, entry, degenerate)


_buffers: dict[tuple[int, int], np.ndarray] = {}


def _mask_buffer(height: int, width: int) -> np.ndarray:
    """This process's reusable mask array (one size kept): a fresh 1920x1920 array costs ~2 ms of page faults."""
    if (height, width) not in _buffers:
        _buffers.clear()
        _buffers[(height, width)] = np.empty((height, width), dtype=np.uint8)
    return _buffers[(height, width)]


def pixel_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels per value 0..255; OpenCV's histogram is 4x faster than bincount and exact below 2**24 pixels (float32)."""
    if mask.size < 2**24:
        return cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(mask.ravel(), minlength=256)


def link_image(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (copy when linking is impossible, e.g. across disks); never re-encode."""
    if target.exists() and os.path.samefile(source, target):
        return
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


def _outputs_exist(root: Path, entry: layout.ManifestEntry) -> bool:
    return (root / entry.image).is_file() and (root / entry.mask).is_file()


def _mask_intact(root: Path, entry: layout.ManifestEntry, report: PrepareReport) -> bool:
    """Whether the mask file is still the one the manifest lists (its SHA-256); a damaged or edited one is counted
    in `report.repaired` and redrawn, never trusted."""
    if sha256_file(root / entry.mask) == entry.mask_sha256:
        return True
    report.repaired += 1
    return False


def _move(root: Path, entry: layout.ManifestEntry, split: str, image: str, mask: str) -> layout.ManifestEntry:
    """Move a sample's unchanged outputs to another split (or name) instead of redrawing them."""
    for old, new in ((entry.image, image), (entry.mask, mask)):
        if old != new:
            os.replace(root / old, root / new)
    return replace(entry, split=split, image=image, mask=mask)


def _recolour(root: Path, entry: layout.ManifestEntry, job: MaskJob) -> layout.ManifestEntry:
    """Give an unchanged mask the new taxonomy's colours, leaving its pixels alone."""
    png = replace_palette((root / entry.mask).read_bytes(), job.palette)
    write_bytes_atomic(root / entry.mask, png)
    return replace(entry, palette_key=job.palette_key, mask_sha256=hashlib.sha256(png).hexdigest())


def _remove_stale(root: Path, previous: Iterable[layout.ManifestEntry], current: Sequence[layout.ManifestEntry]) -> int:
    """Delete files this stage wrote earlier that the new manifest no longer lists; returns how many samples left the folder."""
    in_use = {path for e in current for path in (e.image, e.mask)}
    kept = {e.sample_id for e in current}
    gone = 0
    for entry in previous:
        for path in (entry.image, entry.mask):
            if path not in in_use:
                (root / path).unlink(missing_ok=True)
        gone += entry.sample_id not in kept
    return gone


def _run_jobs(jobs: Iterator[MaskJob], workers: int) -> Iterator[MaskResult]:
    """Results of `make_mask` over `jobs`, in this process or in `workers` processes with a bounded queue (flat memory)."""
    if workers <= 1:
        yield from map(make_mask, jobs)
        return
    pool = spawned_pool(workers)
    pending: set[Future[MaskResult]] = set()
    try:
        for job in jobs:
            pending.add(pool.submit(make_mask, job))
            if len(pending) >= 4 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def class_statistics(
    entries: Iterable[layout.ManifestEntry], taxonomy: Taxonomy
) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {"pixels": {class: n}, "instances": {class: n}, "images": {class: n}}} with every class listed."""
    names = {str(i): n for i, n in enumerate([layout.BACKGROUND_NAME, *taxonomy.classes])} | {
        str(layout.IGNORE_INDEX): "ignore"
    }
    stats = {s: {k: dict.fromkeys(names.values(), 0) for k in ("pixels", "instances", "images")} for s in layout.SPLITS}
    for entry in entries:
        split = stats[entry.split]
        for index, count in entry.pixels.items():
            split["pixels"][names[index]] += count
            split["images"][names[index]] += 1
        for index, count in entry.instances.items():
            split["instances"][names[index]] += count
    return stats


def _info(taxonomy: Taxonomy, options: PrepareOptions, report: PrepareReport) -> dict[str, Any]:
    sizes = Counter(e.split for e in report.entries)
    return {
        "created_by": layout.CREATED_BY,
        "taxonomy": {"name": taxonomy.name, "chain": list(taxonomy.chain), "file": str(taxonomy.path)},
        "classes": [layout.BACKGROUND_NAME, *taxonomy.classes],
        "palette": [list(layout.BACKGROUND_COLOR), *map(list, taxonomy.colors)],
        "background_index": layout.BACKGROUND_INDEX,
        "ignore_index": layout.IGNORE_INDEX,
        "ignore_color": list(layout.IGNORE_COLOR),
        "unknown_labels": options.unknown,
        "split_policy": {"policy": options.split_policy}
        | (
            {"ratios": list(parse_ratios(options.ratios)), "seed": options.seed}
            if options.split_policy in ("grouped", "leave-site-out")
            else {}
        )
        | ({"site": options.site} if options.split_policy == "leave-site-out" else {}),
        "splits": {s: sizes.get(s, 0) for s in layout.SPLITS},
        "class_statistics": class_statistics(report.entries, taxonomy),
        "left_out": {reason: sorted(paths) for reason, paths in report.left_out.items()},
        "source": options.source,
        "rasterization": {"version": RULES_VERSION, "rules": list(RULES)},
    }


def print_summary(report: PrepareReport, taxonomy: Taxonomy, root: Path) -> None:
    """The per-class, per-split table and what the run did."""
    stats = report.info["class_statistics"]
    totals = {s: sum(stats[s]["pixels"].values()) or 1 for s in layout.SPLITS}
    rows = []
    for name in [layout.BACKGROUND_NAME, *taxonomy.classes, "ignore"]:
        if name == "ignore" and not any(stats[s]["pixels"][name] for s in layout.SPLITS):
            continue
        row: list[Any] = [name]
        for s in layout.SPLITS:
            row += [
                stats[s]["instances"][name] if name != layout.BACKGROUND_NAME else "-",
                stats[s]["images"][name],
                100 * stats[s]["pixels"][name] / totals[s],
            ]
        rows.append(row)
    headers = ["class"] + [f"{s} {k}" for s in layout.SPLITS for k in ("polygons", "images", "px %")]
    print(format_table(headers, rows))
    sizes = report.info["splits"]
    print("\nsplits: " + ", ".join(f"{s} {sizes[s]}" for s in layout.SPLITS) + f"  ->  {root}")
    for split in report.empty_splits:
        print(f"warning: no samples in the {split} split")
    for reason, paths in report.left_out.items():
        print(f"left out, {reason}: {len(paths)} ({', '.join(map(str, paths[:5]))}{', ...' if len(paths) > 5 else ''})")
    if report.degenerate:
        print(f"dropped {report.degenerate} degenerate polygon(s) with no area")
    if report.repaired:
        print(
            f"redrew {report.repaired} mask(s) whose file no longer matched the manifest (damaged or edited since the last run)"
        )
    if report.nothing_changed:
        print(f"nothing changed since the last run: {report.up_to_date} masks up to date, none written")
    else:
        print(
            f"masks drawn: {report.written}, up to date: {report.up_to_date}, recoloured: {report.recoloured}, "
            f"moved to another split: {report.moved}, removed: {report.removed}"
        )
