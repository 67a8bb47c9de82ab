"""The FiftyOne adapter shared by the live pull and the export import: records in, samples out.

Both front ends turn CVAT data into `TaskRecord` + `ImageRecord`s (polygons from
`data_engineering.shapes`), then:

    options = SampleOptions.from_settings(settings, split_mapping="training=train")   # or SampleOptions()
    dataset = open_dataset("reef", overwrite=False)      # persistent; refuses a dataset made by something else
    summary = ImportSummary()
    if not task_is_current(dataset, task):                # incremental: CVAT's updated_date unchanged -> skip
        write_task(dataset, task, images, options, summary)   # replaces the task's samples, records updated_date
    print(summary.format())                                # tasks, images, polygons per label, skipped, splits

Field names come from `data_engineering.dataset_contract` (documented in docs/fiftyone_dataset.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import database
from common.cli import UserError
from common.database import check_database
from common.settings import Settings  # before fiftyone: it exports .env's FIFTYONE_* keys FiftyOne reads on import
from common.table import format_table
from data_engineering import dataset_contract as contract
from data_engineering.filenames import DEFAULT_PATTERN, parse_quadrat_name, parse_split_mapping, split_from_subset
from data_engineering.media import check_media_folder, new_media_folder
from data_engineering.shapes import PolygonRecord

# isort: split
import fiftyone as fo
from fiftyone import ViewField as F


@dataclass(frozen=True)
class TaskRecord:
    """One CVAT task as the dataset remembers it."""

    task_id: int
    name: str
    project_name: str
    subset: str | None = None
    updated_date: str = ""  # CVAT's ISO timestamp; decides whether an incremental pull re-imports the task


@dataclass
class ImageRecord:
    """One image of a task: where it is on disk, its CVAT file name and size, its polygons and what was skipped."""

    filepath: Path
    file_name: str  # the name in CVAT, parsed for site/year/quadrat
    width: int
    height: int
    polygons: list[PolygonRecord]
    skipped: Counter[str] = field(default_factory=Counter)
    subset: str | None = None  # the image's own subset (an export's `<image subset>`), used when its task has none

    def subset_in(self, task: TaskRecord) -> str | None:
        """The subset the image is in: its task's, else its own."""
        return task.subset or self.subset or None


@dataclass(frozen=True)
class SampleOptions:
    """How records become samples: the ground-truth field, the file-name pattern, the subset -> split mapping."""

    gt_field: str = contract.GT_FIELD
    filename_pattern: str = DEFAULT_PATTERN
    split_mapping: dict[str, str] = field(default_factory=parse_split_mapping)

    @classmethod
    def from_settings(cls, settings: Settings, split_mapping: str | dict[str, str] | None = None) -> SampleOptions:
        return cls(settings.gt_field_name, settings.filename_pattern, parse_split_mapping(split_mapping))


def build_polyline(polygon: PolygonRecord) -> fo.Polyline:
    """A closed, filled fo.Polyline carrying every CVAT attribute of the polygon (a mask's holes as further rings)."""
    return fo.Polyline(
        label=polygon.label,
        points=[[list(point) for point in ring] for ring in (polygon.points, *polygon.other_rings)],
        closed=True,
        filled=True,
        confidence=polygon.confidence,
        **{
            contract.Z_ORDER: polygon.z_order,
            contract.OCCLUDED: polygon.occluded,
            contract.CVAT_SHAPE_ID: polygon.shape_id,
        },
        **polygon.attributes,
    )


def build_sample(image: ImageRecord, task: TaskRecord, options: SampleOptions) -> fo.Sample:
    """One sample: the image, its polygons, its CVAT provenance, site/year/quadrat and its split tag."""
    quadrat = parse_quadrat_name(image.file_name, options.filename_pattern)
    subset = image.subset_in(task)
    split = split_from_subset(subset, options.split_mapping)
    sample = fo.Sample(
        filepath=str(Path(image.filepath).resolve()),
        tags=[split] if split else [],
        metadata=fo.ImageMetadata(width=image.width, height=image.height),
    )
    sample[options.gt_field] = fo.Polylines(polylines=[build_polyline(p) for p in image.polygons])
    sample[contract.CVAT_PROJECT_NAME] = task.project_name
    sample[contract.CVAT_TASK_ID] = int(task.task_id)
    sample[contract.CVAT_TASK_NAME] = task.name
    sample[contract.CVAT_SUBSET] = subset
    sample[contract.SITE] = quadrat.site
    sample[contract.YEAR] = contract.stored_year(quadrat.year)
    sample[contract.QUADRAT_ID] = quadrat.quadrat
    return sample


def dataset_exists(name: str) -> bool:
    """Whether FiftyOne has a dataset of that name."""
    return fo.dataset_exists(name)


def load_existing(name: str) -> fo.Dataset:
    """An existing dataset by name, or one sentence listing the datasets there are."""
    return database.load_dataset(name, "check the name or import it first")


def is_ours(dataset: fo.Dataset) -> bool:
    """Whether this stage made the dataset (so it may add to it and replace its tasks)."""
    return dataset.info.get(contract.INFO_CREATED_BY) == contract.CREATED_BY


def check_writable(name: str, overwrite: bool = False) -> None:
    """Refuse early (before any download or copy) a dataset name we may not write into, or an unusable database."""
    check_database()
    if not name or not name.strip():
        raise UserError("the dataset name is empty; pass --dataset-name NAME")
    if not overwrite and fo.dataset_exists(name) and not is_ours(fo.load_dataset(name)):
        raise UserError(
            f"a FiftyOne dataset named {name!r} already exists and was not made by reefseg; "
            "choose another --dataset-name or pass --overwrite to replace it"
        )


def planned_media_folder(name: str, overwrite: bool = False) -> str:
    """The media folder `open_dataset(name, overwrite)` will use: the existing dataset's own, else a new one."""
    if not overwrite and fo.dataset_exists(name):
        folder = fo.load_dataset(name).info.get(contract.INFO_MEDIA_FOLDER)
        if folder is not None:
            return check_media_folder(folder)
    return new_media_folder(name)


def media_folder(dataset: fo.Dataset) -> str:
    """The dataset's own media folder name (one is given, and recorded, to a dataset made before folders were per dataset)."""
    folder = dataset.info.get(contract.INFO_MEDIA_FOLDER)
    if folder is not None:
        return check_media_folder(folder)
    dataset.info[contract.INFO_MEDIA_FOLDER] = folder = new_media_folder(dataset.name)
    dataset.save()
    return folder


def open_dataset(name: str, overwrite: bool = False, folder: str | None = None) -> fo.Dataset:
    """The persistent dataset `name`: ours is reopened, a new one is created, another tool's is refused.

    `overwrite=True` deletes any existing dataset of that name first (its media files stay on disk).
    A new dataset records `folder` (default: a new one) as its media folder.
    """
    check_writable(name, overwrite)
    if fo.dataset_exists(name):
        if not overwrite:
            dataset = fo.load_dataset(name)
            if folder is not None and contract.INFO_MEDIA_FOLDER not in dataset.info:
                dataset.info[contract.INFO_MEDIA_FOLDER] = check_media_folder(folder)
                dataset.save()
            year_as_text(dataset)
            return dataset
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.info = {
        contract.INFO_CREATED_BY: contract.CREATED_BY,
        contract.INFO_CVAT_TASKS: {},
        contract.INFO_MEDIA_FOLDER: check_media_folder(folder) if folder is not None else new_media_folder(name),
    }
    dataset.save()
    return dataset


_YEAR_CONVERTED = f"{contract.YEAR}_as_text"  # the converted years until they replace the int field


def year_as_text(dataset: fo.Dataset) -> None:
    """Turn the int `year` field of a dataset made before years were text into text ("2023"), so new samples fit it.

    Through a second field that then takes the name: an interrupted conversion is finished on the next open.
    """
    if dataset.has_sample_field(_YEAR_CONVERTED) and not dataset.has_sample_field(contract.YEAR):
        dataset.rename_sample_field(_YEAR_CONVERTED, contract.YEAR)
    if not isinstance(dataset.get_field(contract.YEAR), fo.IntField):
        return
    if dataset.has_sample_field(_YEAR_CONVERTED):
        dataset.delete_sample_field(_YEAR_CONVERTED)
    dataset.add_sample_field(_YEAR_CONVERTED, fo.StringField)
    dataset.set_values(_YEAR_CONVERTED, [contract.stored_year(y) for y in dataset.values(contract.YEAR)])
    dataset.delete_sample_field(contract.YEAR)
    dataset.rename_sample_field(_YEAR_CONVERTED, contract.YEAR)


def imported_tasks(dataset: fo.Dataset) -> dict[str, str]:
    """{str(task_id): updated_date} of the tasks in the dataset."""
    return dict(dataset.info.get(contract.INFO_CVAT_TASKS) or {})


def task_is_current(dataset: fo.Dataset, task: TaskRecord) -> bool:
    """Whether the task was imported before and CVAT has not changed it since (an empty date never counts)."""
    return bool(task.updated_date) and imported_tasks(dataset).get(str(task.task_id)) == task.updated_date


def delete_task_samples(dataset: fo.Dataset, task_id: int) -> int:
    """Remove a task's samples and its record; returns how many samples went."""
    view = (
        dataset.match(F(contract.CVAT_TASK_ID) == int(task_id))
        if dataset.has_sample_field(contract.CVAT_TASK_ID)
        else None
    )
    count = len(view) if view is not None else 0
    if count:
        dataset.delete_samples(view)
    tasks = imported_tasks(dataset)
    if tasks.pop(str(task_id), None) is not None:
        dataset.info[contract.INFO_CVAT_TASKS] = tasks
        dataset.save()
    return count


# Sample fields that may be None on every sample (no file name matches the pattern, no subset): declared
# with their type so that they exist, as docs/fiftyone_dataset.md promises, whatever the values.
OPTIONAL_FIELDS = {
    contract.CVAT_SUBSET: fo.StringField,
    contract.SITE: fo.StringField,
    contract.YEAR: fo.StringField,
    contract.QUADRAT_ID: fo.StringField,
}


def declare_fields(dataset: fo.Dataset) -> None:
    """Add the contract's optional sample fields the dataset does not have yet."""
    for name, kind in OPTIONAL_FIELDS.items():
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, kind)


def write_task(
    dataset: fo.Dataset,
    task: TaskRecord,
    images: Sequence[ImageRecord],
    options: SampleOptions,
    summary: ImportSummary | None = None,
) -> list[fo.Sample]:
    """Replace the task's samples with `images` and record its updated_date (last, so a crash re-imports it)."""
    delete_task_samples(dataset, task.task_id)
    samples = [build_sample(image, task, options) for image in images]
    declare_fields(dataset)
    if samples:
        dataset.add_samples(samples, dynamic=True, progress=False)
    dataset.info[contract.INFO_CVAT_TASKS] = {**imported_tasks(dataset), str(task.task_id): task.updated_date}
    dataset.save()
    if summary is not None:
        summary.add_task(task, images, options)
    return samples


@dataclass
class ImportSummary:
    """What one pull or import did, for the table every run ends with."""

    tasks: int = 0
    tasks_unchanged: int = 0
    images: int = 0
    polygons: Counter[str] = field(default_factory=Counter)  # per label
    skipped: Counter[str] = field(default_factory=Counter)  # per reason or shape type
    clipped: int = 0
    splits: Counter[str] = field(default_factory=Counter)  # images per split; "" = no split
    images_skipped: list[str] = field(default_factory=list)  # "<task>/<file>: why", for images that could not be read
    frames_deleted: int = 0  # frames deleted in CVAT (live pull), not imported
    honeypot_frames: int = (
        0  # gt_pool honeypots (live pull): placeholders of a validation frame imported once, as itself
    )
    track_shapes: int = 0  # shapes that were a track's keyframes (live pull)

    def add_task(self, task: TaskRecord, images: Sequence[ImageRecord], options: SampleOptions) -> None:
        self.tasks += 1
        self.images += len(images)
        for image in images:
            self.splits[split_from_subset(image.subset_in(task), options.split_mapping) or ""] += 1
            self.polygons.update(p.label for p in image.polygons)
            self.clipped += sum(p.clipped for p in image.polygons)
            self.skipped.update(image.skipped)

    def format(self) -> str:
        """The summary as plain-text tables."""
        overview = [
            ("tasks imported", self.tasks),
            ("tasks unchanged (skipped)", self.tasks_unchanged),
            ("images", self.images),
            ("polygons", sum(self.polygons.values())),
            ("polygons clipped to the image", self.clipped),
            ("images skipped (unreadable)", len(self.images_skipped)),
            ("frames deleted in CVAT (skipped)", self.frames_deleted),
            ("honeypot frames (their real frame imported once)", self.honeypot_frames),
            ("shapes from track keyframes", self.track_shapes),
        ]
        overview += [(f"images in {split}", self.splits.get(split, 0)) for split in contract.SPLIT_TAGS]
        overview.append(("images with no split", self.splits.get("", 0)))
        parts = [format_table(["", "count"], overview)]
        if self.polygons:
            parts.append(format_table(["label", "polygons"], sorted(self.polygons.items())))
        if self.skipped:
            parts.append(format_table(["skipped shape", "count"], sorted(self.skipped.items())))
        if self.images_skipped:
            parts.append(format_table(["image skipped", ""], [(line, "") for line in self.images_skipped]))
        return "\n\n".join(parts)
