"""The live route: a CVAT project's finished tasks into the persistent FiftyOne dataset.

    summary = pull_project(load_settings(), "Reef 2021")   # incremental; refresh=True re-imports every task
    print(summary.format())

How it goes, so that a rerun is always safe:
1. Connect and find the project (clear errors for URL, credentials, a missing project), list the
   tasks whose status is wanted, and keep those that are new or whose CVAT `updated_date` changed.
2. Read every such task's image list and check every file name before anything is written: a name
   that would land outside `<MEDIA_DIR>/<dataset media folder>/task_<id>/` (`..`, absolute) stops the pull.
   Each dataset has its own media folder and each task its own folder in it (`data_engineering.media`),
   so neither two datasets nor two tasks holding the same file name ever share a file.
3. Per task: download the original-quality frames, WORKERS at a time (atomic writes, never over other
   content; a frame already on disk that decodes completely at CVAT's width and height is not
   downloaded again, so an interrupted pull resumes: CVAT never changes a task's images), check each
   whole (`common.image_files.check_image`; an unusable one is skipped and listed), read the annotations,
   and replace the task's samples. A task counts as imported only once its samples
   are written, so a pull stopped half-way re-pulls that task, and only that task, next time.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cvat_sdk.version import VERSION as SDK_VERSION

from common.cli import UserError, run
from common.image_files import ImageProblem, check_image
from common.names import check_name
from common.progress import Progress
from common.progress import progress as progress_bar
from common.settings import Settings, load_settings
from data_engineering.cvat_client import (
    TASK_STATUSES,
    CvatConnection,
    CvatFrame,
    CvatLabel,
    CvatTask,
    connect,
    display_url,
    parse_statuses,
    status_summary,
    video_task_refusal,
)
from data_engineering.fiftyone_writer import (
    ImageRecord,
    ImportSummary,
    SampleOptions,
    TaskRecord,
    check_writable,
    dataset_exists,
    imported_tasks,
    media_folder,
    open_dataset,
    planned_media_folder,
    task_is_current,
    write_task,
)
from data_engineering.filenames import media_path, name_length_problem
from data_engineering.import_export import image_size
from data_engineering.media import store, stored_copy
from data_engineering.shapes import shapes_to_polygons


@dataclass
class TaskPlan:
    """One task to pull: its record for the dataset, its frames and where each goes on disk."""

    task: CvatTask
    record: TaskRecord
    frames: list[CvatFrame]
    paths: list[Path]
    deleted: int = 0  # frames deleted in CVAT, left out
    honeypots: int = 0  # gt_pool placeholder frames, left out (their real frame is imported once)


def frame_on_disk(frame: CvatFrame, path: Path) -> bool:
    """Whether `path` already holds a whole image of the frame's size (so a resumed pull skips it); links never count."""
    if path.is_symlink():
        return False
    try:
        return image_size(path) == (frame.width, frame.height)
    except OSError:
        return False


def task_record(task: CvatTask, project_name: str) -> TaskRecord:
    """The task as the dataset remembers it."""
    return TaskRecord(
        task_id=task.id,
        name=task.name,
        project_name=project_name,
        subset=task.subset or None,
        updated_date=task.updated_date,
    )


def plan_task(cvat: CvatConnection, task: CvatTask, record: TaskRecord, media_dir: Path, folder: str) -> TaskPlan:
    """A task's frames and their local paths in the dataset's media folder; refuses file names that would escape it."""
    listed = cvat.frame_list(task)
    paths = []
    for frame in listed.frames:
        try:
            paths.append(media_path(media_dir, folder, task.id, frame.name))
        except UserError as error:
            raise UserError(f"task {task.id} ({task.name!r}): {error}") from None
    return TaskPlan(task, record, listed.frames, paths, listed.deleted, listed.honeypots)


def download_frames(cvat: CvatConnection, plan: TaskPlan, progress: Progress, workers: int) -> dict[int, str]:
    """Fetch the task's frames not already on disk, `workers` at a time; returns {frame number: why it is unusable}.

    A frame stored elsewhere than its usual place (that place held other content) gets its path updated in `plan.paths`.
    """
    unusable = {frame.number: problem for frame in plan.frames if (problem := name_length_problem(frame.name))}
    missing = [
        (i, frame, path)
        for i, (frame, path) in enumerate(zip(plan.frames, plan.paths))
        if frame.number not in unusable and not frame_on_disk(frame, path)
    ]
    progress.update(len(plan.frames) - len(missing))

    def fetch(item: tuple[int, CvatFrame, Path]) -> tuple[int, str | None]:
        index, frame, path = item
        data = cvat.frame_bytes(plan.task, frame.number)
        try:
            size = check_image(io.BytesIO(data))
        except ImageProblem as error:
            return frame.number, f"CVAT sent a file that is not a whole image: {error}"
        if size != (frame.width, frame.height):
            return frame.number, (
                f"CVAT lists it as {frame.width}x{frame.height} but sent a {size[0]}x{size[1]} image, "
                "so the polygons would not fit it; check the task's data in CVAT"
            )
        digest = hashlib.sha256(data).hexdigest()
        plan.paths[index] = stored_copy(path, digest) or store(path, digest, lambda tmp: tmp.write_bytes(data))
        return frame.number, None

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for number, problem in pool.map(fetch, missing):
            progress.update(1)
            if problem:
                unusable[number] = problem
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, queued downloads are dropped; a rerun resumes
    return unusable


def build_images(
    cvat: CvatConnection, plan: TaskPlan, labels: dict[int, CvatLabel], unusable: dict[int, str], summary: ImportSummary
) -> list[ImageRecord]:
    """The task's images with their polygons (skipped shapes counted per image)."""
    shapes, from_tracks = cvat.shapes(plan.task, labels)
    kept = {frame.number for frame in plan.frames}
    summary.frames_deleted += plan.deleted
    summary.honeypot_frames += plan.honeypots
    summary.track_shapes += sum(count for number, count in from_tracks.items() if number in kept)
    images = []
    for frame, path in zip(plan.frames, plan.paths):
        if frame.number in unusable:
            summary.images_skipped.append(f"task {plan.task.id}/{frame.name}: {unusable[frame.number]}")
            continue
        where = f"task {plan.task.id}, {frame.name}"
        polygons, skipped = shapes_to_polygons(shapes.get(frame.number, []), frame.width, frame.height, where=where)
        images.append(ImageRecord(path, frame.name, frame.width, frame.height, polygons, skipped))
    return images


def pull_project(
    settings: Settings,
    project_name: str,
    dataset_name: str | None = None,
    status: str = "completed",
    refresh: bool = False,
    overwrite: bool = False,
    split_mapping: str | None = None,
) -> ImportSummary:
    """Pull the project's tasks with the wanted status into the dataset (named after the project by default)."""
    statuses = parse_statuses(status)
    options = SampleOptions.from_settings(settings, split_mapping)
    summary = ImportSummary()
    with connect(settings) as cvat:
        project = cvat.find_project(project_name)
        tasks = cvat.tasks(project, statuses)
        wanted = "/".join(sorted(statuses))
        print(
            f"CVAT {cvat.server_version} at {display_url(cvat.url)} (cvat-sdk {SDK_VERSION}): project {project.name!r}, "
            f"{len(tasks)} task(s) with status {wanted}"
        )
        if not tasks:
            raise UserError(no_task_refusal(project.name, wanted, cvat.status_counts))
        for task in tasks:
            if task.is_video:
                raise UserError(video_task_refusal(task))
        name = check_name(dataset_name or project.name, "dataset name", "pass --dataset-name with a plain name")
        check_writable(name, overwrite)
        records = {t.id: task_record(t, project.name) for t in tasks}
        known = (
            open_dataset(name) if dataset_exists(name) and not overwrite else None
        )  # created only once every task is checked
        todo = tasks if refresh or known is None else [t for t in tasks if not task_is_current(known, records[t.id])]
        summary.tasks_unchanged = len(tasks) - len(todo)
        folder = media_folder(known) if known is not None else planned_media_folder(name, overwrite)
        plans = [plan_task(cvat, t, records[t.id], settings.media_dir, folder) for t in todo]
        dataset = known or open_dataset(name, overwrite=overwrite, folder=folder)
        gone = set(imported_tasks(dataset)) - {str(t.id) for t in tasks}
        labels = cvat.labels(project) if plans else {}
        with progress_bar(
            total=sum(len(p.frames) for p in plans), desc="frames", unit="img", disable=not plans
        ) as progress:
            for plan in plans:
                unusable = download_frames(cvat, plan, progress, settings.workers)
                write_task(dataset, plan.record, build_images(cvat, plan, labels, unusable, summary), options, summary)
    if gone:
        print(
            f"note: {len(gone)} task(s) in dataset {dataset.name!r} are no longer listed with that status in CVAT; their samples were kept"
        )
    print(f"dataset {dataset.name!r}: {len(dataset)} samples; images in {settings.media_dir / folder}")
    return summary


def no_task_refusal(project: str, wanted: str, counts: Counter[str]) -> str:
    """The sentence for a project with no task of the wanted status: what it has, and the flag that takes those."""
    if not counts:
        return f"project {project!r} has no tasks yet; create its tasks in CVAT and pull again"
    others = ",".join(status for status in TASK_STATUSES if counts[status])
    return (
        f"project {project!r} has no task with status {wanted} (its {sum(counts.values())} tasks: {status_summary(counts)}); "
        f"pass --status {others} (or --status all) to pull them, or mark the finished ones completed in CVAT"
    )


def as_name(value: object, what: str) -> str:
    """A name as typed: fire reads `2021` as a number (kept as text) and `Reef, 2021` as a tuple (refused)."""
    if isinstance(value, (list, tuple, dict)):
        raise UserError(
            f"the {what} was read as a list because of its comma or brackets; quote it twice, e.g. '\"Reef, 2021\"'"
        )
    return str(value)


def pull_from_cvat(
    project: str,
    dataset_name: str | None = None,
    status: str = "completed",
    refresh: bool = False,
    overwrite: bool = False,
    media_dir: str | None = None,
    split_mapping: str | None = None,
) -> None:
    """Pull a CVAT project's tasks into a persistent FiftyOne dataset, then print a summary.

    Args:
        project: the CVAT project's name (quote it if it has spaces).
        dataset_name: the FiftyOne dataset (default: the project's name).
        status: task statuses to take: completed (default), annotation, validation, a comma list, or all.
        refresh: re-import every task, not only new or changed ones.
        overwrite: replace an existing dataset of that name that something else made.
        media_dir: where images are stored (default: MEDIA_DIR); they go in <media_dir>/<dataset folder>/task_<id>/.
        split_mapping: subset -> split pairs, e.g. "training=train,dev=val" (default: train/training, val/validation, test).
    """
    settings = load_settings(media_dir=media_dir)
    dataset = (
        check_name(
            as_name(dataset_name, "dataset name"),
            "--dataset-name",
            "it names the FiftyOne dataset and its prepared folders",
        )
        if dataset_name is not None
        else None
    )
    summary = pull_project(
        settings,
        as_name(project, "project name"),
        dataset,
        as_name(status, "status"),
        refresh,
        overwrite,
        split_mapping,
    )
    print(summary.format())


def main() -> None:
    """Entry point of data_engineering/pull_from_cvat.py."""
    run(pull_from_cvat, secrets=load_settings().secrets)
