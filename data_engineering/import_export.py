"""Import a "CVAT for images 1.1" export (task, job or project; zip, folder or annotations.xml) into FiftyOne.

We parse `annotations.xml` ourselves instead of using `fo.types.CVATImageDataset`, which rounds
points to whole pixels and drops `z_order`; the overlap rule downstream needs both.

    summary = import_cvat_export(Path("export.zip"), dataset_name="reef", settings=load_settings())

Images are looked for inside the export (`images/<subset>/<name>` as CVAT writes project exports,
`images/<name>` as it writes task exports, or `<name>`), then in the same places beside the archive.
Each is checked whole (`common.image_files.check_image`: decodes completely, at most MAX_IMAGE_PIXELS,
the size annotations.xml gives) and copied into the dataset's own media folder,
`<MEDIA_DIR>/<dataset media folder>/task_<id>/<name>` (`data_engineering.media`: atomically, never over
other content; a copy already there with the same SHA-256 is kept, so a rerun copies nothing again).
A missing, unreadable or symbolic-link image is skipped and listed in the summary; an export in which
no image at all can be used is an error. Archive entries and file names that would land outside the
media folder are refused.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO
from xml.etree import ElementTree  # expat >= 2.4 refuses entity expansion bombs; external entities are never fetched

from common.cli import UserError, run
from common.image_files import ImageProblem, check_image
from common.names import check_name
from common.progress import progress
from common.settings import Settings, load_settings
from data_engineering.fiftyone_writer import (
    ImageRecord,
    ImportSummary,
    SampleOptions,
    TaskRecord,
    check_writable,
    open_dataset,
    planned_media_folder,
    task_is_current,
    write_task,
)
from data_engineering.filenames import check_relative_name, media_path, name_length_problem
from data_engineering.media import copy_into, sha256_stream, store, stored_copy
from data_engineering.shapes import CvatShape, shapes_to_polygons

ANNOTATIONS_FILE = "annotations.xml"
SHAPE_TAGS = ("polygon", "polyline", "box", "points", "ellipse", "cuboid", "mask", "skeleton")
DEFAULT_SUBSET = "default"  # CVAT's folder for the images of a task without a subset in project exports
SYMLINK = "symlink"  # where-kind of an image that is a symbolic link in the export (never followed)


@dataclass
class ExportImage:
    """One `<image>` element: the file name in CVAT, its size, its task and subset, its shapes."""

    name: str
    width: int
    height: int
    task_id: int
    subset: str | None
    shapes: list[CvatShape] = field(default_factory=list)


@dataclass
class CvatExport:
    """What annotations.xml holds: the project's name (project exports only), its tasks and images."""

    project_name: str | None
    tasks: dict[int, TaskRecord]
    images: list[ExportImage]


def _text(element: ElementTree.Element | None, tag: str) -> str:
    found = element.find(tag) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _task_record(element: ElementTree.Element, project_name: str) -> TaskRecord:
    task_id = _text(element, "id")
    return TaskRecord(
        task_id=int(task_id) if task_id.isdigit() else 0,
        name=_text(element, "name"),
        project_name=project_name,
        subset=_text(element, "subset") or None,
        updated_date=_text(element, "updated"),
    )


def _shape(element: ElementTree.Element) -> CvatShape:
    """A shape element as a CvatShape (points flat, in pixels, exactly as written: sub-pixel kept)."""
    attrib = element.attrib
    points: list[float] = []
    if element.tag == "box":
        points = [float(attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")]
    elif (
        element.tag == "mask"
    ):  # rle="r0, r1, ..." over the box left, top, width, height: CVAT's points end with its inclusive corners
        left, top = int(attrib["left"]), int(attrib["top"])
        points = [float(v) for v in attrib.get("rle", "").split(",") if v.strip()]
        points += [left, top, left + int(attrib["width"]) - 1, top + int(attrib["height"]) - 1]
    elif attrib.get("points"):
        for pair in attrib["points"].split(";"):
            values = pair.split(",")
            if len(values) != 2:  # "1,2,3;4" holds an even count that would silently pair up wrongly
                raise ValueError(
                    f"a {element.tag} with label {attrib.get('label', '')!r} has the point {pair.strip()!r}, "
                    "which is not one x,y pair"
                )
            points.extend(float(v) for v in values)
    return CvatShape(
        type="rectangle" if element.tag == "box" else element.tag,
        label=attrib.get("label", ""),
        points=points,
        z_order=int(attrib.get("z_order", 0) or 0),
        occluded=attrib.get("occluded", "0") == "1",
        attributes={a.attrib.get("name", ""): (a.text or "") for a in element.findall("attribute")},
    )


def parse_annotations(stream: IO[bytes], fallback_project_name: str) -> CvatExport:
    """Parse a CVAT-for-images 1.1 annotations.xml, streaming (project exports can be large)."""
    tasks: dict[int, TaskRecord] = {}
    images: list[ExportImage] = []
    project_name: str | None = None
    tracks = 0
    try:
        for _, element in ElementTree.iterparse(stream, events=("end",)):
            if element.tag == "track":
                tracks += 1
            elif element.tag == "meta":
                project = element.find("project")
                project_name = _text(project, "name") or None
                owner = project_name or fallback_project_name
                task_elements = (
                    project.findall("tasks/task")
                    if project is not None
                    else element.findall("task") + element.findall("job")
                )
                for task_element in task_elements:
                    task = _task_record(task_element, owner)
                    tasks[task.task_id] = task
                element.clear()
            elif element.tag == "image":
                attrib = element.attrib
                task_id = int(attrib["task_id"]) if attrib.get("task_id", "").isdigit() else next(iter(tasks), 0)
                subset = attrib.get("subset") or (tasks[task_id].subset if task_id in tasks else None)
                try:
                    shapes = [_shape(child) for child in element if child.tag in SHAPE_TAGS]
                except ValueError as error:
                    raise ValueError(f"in image {attrib.get('name', '')!r}, {error}") from None
                images.append(
                    ExportImage(
                        name=attrib.get("name", ""),
                        width=int(float(attrib.get("width") or 0)),
                        height=int(float(attrib.get("height") or 0)),
                        task_id=task_id,
                        subset=subset,
                        shapes=shapes,
                    )
                )
                element.clear()
    except (ElementTree.ParseError, KeyError, ValueError) as error:
        raise UserError(
            f"{ANNOTATIONS_FILE} is not a valid CVAT-for-images 1.1 file ({error}); export again with that format"
        ) from None
    if tracks and not images:
        raise UserError(
            f"{ANNOTATIONS_FILE} is a 'CVAT for video' export (tracks, no images); export the project as 'CVAT for images 1.1'"
        )
    owner = project_name or fallback_project_name
    for image in images:
        tasks.setdefault(
            image.task_id, TaskRecord(image.task_id, f"task {image.task_id}", owner)
        )  # its images keep their own subsets
    return CvatExport(project_name, tasks, images)


class ExportSource:
    """A zip, a folder or an annotations.xml, read without ever extracting anything we did not ask for."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.zip: zipfile.ZipFile | None = None
        if not self.path.exists():
            raise UserError(
                f"{self.path} does not exist; pass a CVAT export zip, its unzipped folder or its annotations.xml"
            )
        if self.path.is_file() and zipfile.is_zipfile(self.path):
            self.zip = zipfile.ZipFile(self.path)
            self._refuse_escaping_entries(self.zip)
            xml_members = sorted(
                (n for n in self.zip.namelist() if PurePosixPath(n).name == ANNOTATIONS_FILE),
                key=lambda n: n.count("/"),
            )
            if not xml_members:
                raise UserError(
                    f"{self.path} holds no {ANNOTATIONS_FILE}; export the dataset in the 'CVAT for images 1.1' format"
                )
            self.xml_member = xml_members[0]
            self.members = set(self.zip.namelist())
            self.root = PurePosixPath(self.xml_member).parent
            self.beside = self.path.parent
        else:
            self.xml_file = self.path / ANNOTATIONS_FILE if self.path.is_dir() else self.path
            if not self.xml_file.is_file():
                raise UserError(
                    f"{self.path} holds no {ANNOTATIONS_FILE}; pass the unzipped 'CVAT for images 1.1' export"
                )
            self.beside = self.xml_file.parent

    def _refuse_escaping_entries(self, archive: zipfile.ZipFile) -> None:
        for name in archive.namelist():
            if name.endswith("/"):
                continue
            try:
                check_relative_name(name)
            except UserError:
                raise UserError(
                    f"archive entry {name!r} in {self.path.name} would be written outside the media folder; refusing this archive"
                ) from None

    def annotations(self) -> IO[bytes]:
        return self.zip.open(self.xml_member) if self.zip else open(self.xml_file, "rb")

    def _candidates(self, name: str, subset: str | None) -> Iterator[PurePosixPath]:
        relative = check_relative_name(name)
        yield PurePosixPath("images") / (subset or DEFAULT_SUBSET) / relative
        yield PurePosixPath("images") / relative
        yield relative

    def find_image(self, name: str, subset: str | None) -> tuple[str, str | Path] | None:
        """Where an image is: ("zip", member name), ("file", path) or (SYMLINK, its name); None if nowhere."""
        if self.zip:
            for candidate in self._candidates(name, subset):
                member = str(self.root / candidate)
                if member in self.members:
                    mode = self.zip.getinfo(member).external_attr >> 16
                    return (SYMLINK, member) if stat.S_ISLNK(mode) else ("zip", member)
        for candidate in self._candidates(name, subset):
            path = self.beside / candidate
            if self._through_link(candidate):
                return SYMLINK, path
            if path.is_file():
                return "file", path
        return None

    def _through_link(self, candidate: PurePosixPath) -> bool:
        """Whether the path to `candidate` below the export's folder passes a symbolic link."""
        current = self.beside
        for part in candidate.parts:
            current = current / part
            if current.is_symlink():
                return True
            if not current.exists():
                return False
        return False

    def open_image(self, where: tuple[str, str | Path]) -> IO[bytes]:
        kind, location = where
        return self.zip.open(str(location)) if kind == "zip" and self.zip else open(Path(location), "rb")

    def close(self) -> None:
        if self.zip:
            self.zip.close()


def image_size(path: Path | BinaryIO) -> tuple[int, int]:
    """(width, height) of an image file or stream that decodes completely; OSError saying why otherwise."""
    try:
        return check_image(path)
    except ImageProblem as error:
        raise OSError(str(error)) from None


def import_cvat_export(
    path: Path,
    dataset_name: str | None,
    settings: Settings,
    overwrite: bool = False,
    split_mapping: str | dict[str, str] | None = None,
) -> ImportSummary:
    """Import every task of the export into the dataset (a re-imported task replaces its samples).

    The dataset is named `dataset_name`, else after the CVAT project, else after the export's file name.
    """
    if dataset_name is not None:
        dataset_name = check_name(
            dataset_name, "--dataset-name", "it names the FiftyOne dataset and its prepared folders"
        )
    source = ExportSource(path)
    try:
        fallback_name = dataset_name or Path(path).stem
        with source.annotations() as stream:
            export = parse_annotations(stream, fallback_project_name=fallback_name)
        options = SampleOptions.from_settings(settings, split_mapping)
        dataset_name = check_name(
            dataset_name or export.project_name or fallback_name,
            "dataset name",
            "pass --dataset-name with a plain name",
        )
        for image in export.images:  # every name checked before anything is written
            check_relative_name(image.name)
        check_writable(dataset_name, overwrite)
        folder = planned_media_folder(dataset_name, overwrite)
        summary = ImportSummary()
        by_task: dict[int, list[ImageRecord]] = {task_id: [] for task_id in export.tasks}
        for image in progress(export.images, desc="images", unit="img"):
            record, problem = _import_image(source, image, settings.media_dir, folder)
            if record is None:
                summary.images_skipped.append(f"task {image.task_id}/{image.name}: {problem}")
            else:
                by_task[image.task_id].append(record)
        if export.images and len(summary.images_skipped) == len(export.images):
            raise UserError(
                f"none of the {len(export.images)} images of {path} could be found or read; export with images "
                "('Save images') or put them beside the archive under images/"
            )
        dataset = open_dataset(dataset_name, overwrite=overwrite, folder=folder)
        for task_id, records in by_task.items():
            task = replace(export.tasks[task_id], updated_date=_fingerprint(export.tasks[task_id], records))
            if task_is_current(dataset, task):
                summary.tasks_unchanged += 1  # its samples keep their ids, so later stages redo nothing
                continue
            write_task(dataset, task, records, options, summary)
        print(f"dataset {dataset.name!r}: {len(dataset)} samples; images in {settings.media_dir / folder}")
        return summary
    finally:
        source.close()


def _fingerprint(task: TaskRecord, records: list[ImageRecord]) -> str:
    """What says whether a re-imported export task changed: CVAT's `updated` date, its images and their polygons."""
    content = repr(
        (
            task.name,
            task.subset,
            [(str(r.filepath), r.file_name, r.width, r.height, r.subset, r.polygons) for r in records],
        )
    )
    return f"{task.updated_date}#{hashlib.sha256(content.encode()).hexdigest()[:16]}"


def _import_image(
    source: ExportSource, image: ExportImage, media_dir: Path, folder: str
) -> tuple[ImageRecord | None, str]:
    """The image checked, copied into the dataset's media folder, and its polygons; or None and why it was skipped."""
    too_long = name_length_problem(image.name)
    if too_long:
        return None, too_long
    where = source.find_image(image.name, image.subset)
    if where is None:
        return None, "not found in or beside the export"
    if where[0] == SYMLINK:
        return None, "a symbolic link in the export, never followed; put the image file itself in the export"
    try:
        with source.open_image(where) as stream:
            width, height = check_image(stream)
    except ImageProblem as error:
        return None, f"unreadable: {error}"
    if image.width and image.height and (image.width, image.height) != (width, height):
        return None, (
            f"annotations.xml gives {image.width}x{image.height} but the file is {width}x{height}, so the polygons "
            "would not fit it; export again with the images CVAT holds"
        )
    base = media_path(media_dir, folder, image.task_id, image.name)
    with source.open_image(where) as stream:
        digest = sha256_stream(stream)
    target = stored_copy(base, digest)
    if target is None:

        def write(tmp: Path) -> None:
            with source.open_image(where) as stream:
                copy_into(stream, tmp)

        target = store(base, digest, write)
    polygons, skipped = shapes_to_polygons(image.shapes, width, height, where=f"task {image.task_id}, {image.name}")
    return ImageRecord(target, image.name, width, height, polygons, Counter(skipped), subset=image.subset), ""


def import_command(
    export: str,
    dataset_name: str | None = None,
    overwrite: bool = False,
    media_dir: str | None = None,
    split_mapping: str | None = None,
) -> None:
    """Import a "CVAT for images 1.1" task or project export into a persistent FiftyOne dataset.

    Args:
        export: the export's zip, its unzipped folder, or its annotations.xml.
        dataset_name: the FiftyOne dataset (default: the CVAT project's name, else the export's file name).
        overwrite: replace an existing dataset of that name that something else made.
        media_dir: where images are copied (default: MEDIA_DIR); they go in <media_dir>/<dataset folder>/task_<id>/.
        split_mapping: subset -> split pairs, e.g. "training=train,dev=val" (default: train/training, val/validation, test).
    """
    settings = load_settings(media_dir=media_dir)
    summary = import_cvat_export(
        Path(str(export)), dataset_name, settings, overwrite=overwrite, split_mapping=split_mapping
    )
    print(summary.format())


def main() -> None:
    """Entry point of data_engineering/import_cvat_export.py."""
    run(import_command, secrets=load_settings().secrets)
