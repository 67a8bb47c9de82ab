"""The CVAT adapter: a thin layer over `cvat-sdk` that speaks in this stage's plain records.

    with connect(settings) as cvat:                 # username/password or access token, organization
        project = cvat.find_project("Reef 2021")    # UserError listing the projects that exist
        tasks = cvat.tasks(project, {"completed"})  # CvatTask records, CVAT's updated_date in UTC
        labels = cvat.labels(project)               # {label id: CvatLabel}
        frames = cvat.frames(tasks[0])              # CvatFrame(number, name, width, height), deleted and honeypot frames left out
        listed = cvat.frame_list(tasks[0])          # the same, with how many deleted and honeypot frames were left out
        shapes, from_tracks = cvat.shapes(tasks[0], labels)  # {frame: [CvatShape]}, names resolved; tracks' keyframes included
        data = cvat.frame_bytes(tasks[0], 0)        # the original-quality image file

Every failure the user can fix (wrong URL, credentials, server errors) becomes one `UserError`
sentence that never contains the password or token. The SDK's own warnings (e.g. an older
server's version) are kept off the terminal: `CvatConnection.server_version` carries it instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import urllib3
from cvat_sdk import Client
from cvat_sdk.api_client import exceptions as api_exceptions
from cvat_sdk.core.client import AccessTokenCredentials, Config, PasswordCredentials
from cvat_sdk.core.exceptions import InvalidHostException
from cvat_sdk.core.proxies.projects import Project
from cvat_sdk.core.proxies.tasks import Task
from cvat_sdk.version import VERSION as SDK_VERSION
from packaging.version import Version

from common.cli import UserError
from common.settings import Settings
from data_engineering.shapes import CvatShape

TASK_STATUSES = ("annotation", "validation", "completed")
ACCESS_TOKENS_SINCE = Version("2.48")  # CVAT release that added personal access tokens
MAX_PROJECTS_LISTED = 20

_SDK_LOGGER = logging.getLogger("reefseg.cvat_sdk")
_SDK_LOGGER.addHandler(logging.NullHandler())
_SDK_LOGGER.propagate = False


@dataclass(frozen=True)
class CvatTask:
    """A task of the project, with what an incremental pull compares."""

    id: int
    name: str
    status: str
    subset: str
    updated_date: str  # ISO 8601 in UTC, as CVAT reports it
    size: int
    validation_mode: str = ""  # "gt" (a ground-truth job), "gt_pool" (honeypots) or "" (none, or a CVAT before 2.23)
    is_video: bool = False  # made from a video file (CVAT's `interpolation` mode), not from photos


@dataclass(frozen=True)
class CvatLabel:
    """A label and the names of its attributes by spec id (shapes refer to attributes by spec id)."""

    id: int
    name: str
    attributes: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CvatFrame:
    """One image of a task as CVAT's data/meta describes it."""

    number: int
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class FrameList:
    """A task's images to import, and how many of its frames were left out as deleted or as honeypots."""

    frames: list[CvatFrame]
    deleted: int = 0  # deleted in CVAT's UI (`data/meta` `deleted_frames`)
    honeypots: int = 0  # gt_pool placeholders repeating a validation frame that is imported once, as itself


def display_url(url: str) -> str:
    """The URL without any user:password part, safe to print."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_statuses(status: str | Iterable[str]) -> set[str]:
    """`completed`, `annotation,validation` or `all` as a set of CVAT task statuses."""
    names = status.split(",") if isinstance(status, str) else list(status)
    wanted = {name.strip().lower() for name in names if name.strip()}
    if wanted == {"all"}:
        return set(TASK_STATUSES)
    unknown = sorted(wanted - set(TASK_STATUSES))
    if unknown or not wanted:
        raise UserError(
            f"task status {sorted(unknown) or status!r} is not one of {', '.join(TASK_STATUSES)} or all; fix --status"
        )
    return wanted


def _utc_iso(value: dt.datetime | str | None) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value or "")


def _network_reason(error: BaseException) -> str:
    """The innermost reason of a connection failure, e.g. 'Connection refused'."""
    seen: set[int] = set()
    queue: list[BaseException] = [error]
    innermost = error
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        innermost = current
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        queue.extend(item for item in linked if isinstance(item, BaseException))
    text = str(innermost)
    return text if text and len(text) <= 80 else type(innermost).__name__


class CvatConnection:
    """A logged-in CVAT client; each method is one question to the server, answered with plain records."""

    def __init__(self, client: Client, url: str, server_version: str):
        self.client = client
        self.url = url
        self.server_version = server_version
        self._tasks: dict[int, Task] = {}
        self.status_counts: Counter[str] = Counter()  # statuses of every task the last `tasks` call listed

    def find_project(self, name: str) -> Project:
        """The project called exactly `name`; a UserError names the projects that exist when it does not."""
        with translate_errors(self.url, "looking up the project"):
            matches = [p for p in self.client.projects.list(name=name) if p.name == name]
            if len(matches) == 1:
                return matches[0]
            if matches:
                ids = ", ".join(str(p.id) for p in matches)
                raise UserError(
                    f"{len(matches)} CVAT projects are named {name!r} (ids {ids}); set CVAT_ORGANIZATION to the organization of the one you mean"
                )
            names = sorted({p.name for p in self.client.projects.list()})
        listed = ", ".join(repr(n) for n in names[:MAX_PROJECTS_LISTED])
        more = f" and {len(names) - MAX_PROJECTS_LISTED} more" if len(names) > MAX_PROJECTS_LISTED else ""
        existing = f"projects there: {listed}{more}" if names else "this account sees no projects there"
        raise UserError(f"CVAT at {display_url(self.url)} has no project named {name!r}; {existing}")

    def tasks(self, project: Project, statuses: set[str]) -> list[CvatTask]:
        """The project's tasks whose status is in `statuses`, by id."""
        with translate_errors(self.url, f"listing the tasks of project {project.name!r}"):
            found = project.get_tasks()
        self._tasks.update({task.id: task for task in found})
        self.status_counts = Counter(str(t.status) for t in found)
        return sorted(
            (
                CvatTask(
                    t.id,
                    t.name,
                    str(t.status),
                    t.subset or "",
                    _utc_iso(t.updated_date),
                    int(t.size or 0),
                    validation_mode=str(getattr(t, "validation_mode", None) or ""),
                    is_video=_is_video(t),
                )
                for t in found
                if str(t.status) in statuses
            ),
            key=lambda t: t.id,
        )

    def labels(self, project: Project) -> dict[int, CvatLabel]:
        """The project's labels by id, with their attribute names by spec id."""
        with translate_errors(self.url, f"listing the labels of project {project.name!r}"):
            found = project.get_labels()
        return {lb.id: CvatLabel(lb.id, lb.name, {a.id: a.name for a in lb.attributes}) for lb in found}

    def frames(self, task: CvatTask) -> list[CvatFrame]:
        """The task's images (deleted frames and honeypots left out)."""
        return self.frame_list(task).frames

    def frame_list(self, task: CvatTask) -> FrameList:
        """The task's images to import: deleted frames left out, and a gt_pool task's honeypots (placeholders that
        show a validation frame again inside the annotation jobs), so that every photo is imported once."""
        with translate_errors(self.url, f"reading the image list of task {task.id}"):
            meta = self._tasks[task.id].get_meta()
        listed = list(meta.frames or [])
        if task.is_video or (len(listed) == 1 and int(meta.size or 1) > 1):
            raise UserError(video_task_refusal(task))
        deleted = set(meta.deleted_frames or []) & set(range(len(listed)))
        honeypots = self._honeypot_frames(task, [f.name for f in listed]) - deleted
        frames = [
            CvatFrame(n, f.name, int(f.width), int(f.height))
            for n, f in enumerate(listed)
            if n not in deleted | honeypots
        ]
        return FrameList(frames, deleted=len(deleted), honeypots=len(honeypots))

    def _honeypot_frames(self, task: CvatTask, names: list[str]) -> set[int]:
        """A gt_pool task's honeypot frame numbers, from its validation layout. Where the server has no layout to give
        or does not report the task's validation mode, every frame whose name comes again later: file names are unique
        in a task but for honeypots, and the validation pool follows the annotation jobs' frames."""
        last = {name: n for n, name in enumerate(names)}
        repeated = {n for n, name in enumerate(names) if last[name] != n}
        if task.validation_mode != "gt_pool":
            return repeated
        with translate_errors(self.url, f"reading the validation layout of task {task.id}"):
            try:
                layout, _ = self.client.api_client.tasks_api.retrieve_validation_layout(task.id)
                return {int(n) for n in layout.honeypot_frames or []}
            except api_exceptions.NotFoundException:
                return repeated

    def shapes(self, task: CvatTask, labels: dict[int, CvatLabel]) -> tuple[dict[int, list[CvatShape]], Counter[int]]:
        """The task's shapes by frame, with label and attribute names; and how many of them per frame came from tracks.

        A track (drawn with CVAT's track tool, even on an image task) stores its keyframes: each one that is not
        `outside` is a shape of its frame, with the track's label and attributes (the keyframe's own win).
        Frames between keyframes are CVAT's interpolation, which means nothing between separate quadrat photos.
        """
        with translate_errors(self.url, f"reading the annotations of task {task.id}"):
            annotations = self._tasks[task.id].get_annotations().to_dict()
        by_frame: dict[int, list[CvatShape]] = defaultdict(list)

        def add(shape: dict, label_id: int, attributes: list[dict], shape_id: int | None) -> None:
            label = labels.get(label_id, CvatLabel(label_id, ""))
            by_frame[int(shape["frame"])].append(
                CvatShape(
                    type=str(shape["type"]),
                    label=label.name,
                    points=shape.get("points") or [],
                    z_order=int(shape.get("z_order") or 0),
                    occluded=bool(shape.get("occluded")),
                    attributes={
                        label.attributes.get(a["spec_id"], str(a["spec_id"])): str(a["value"]) for a in attributes
                    },
                    shape_id=shape_id,
                )
            )

        for shape in annotations.get("shapes", []):
            add(shape, shape["label_id"], shape.get("attributes") or [], shape.get("id"))
        from_tracks: Counter[int] = Counter()
        for track in annotations.get("tracks", []):
            for keyframe in track.get("shapes", []):
                if not keyframe.get("outside"):
                    add(
                        keyframe,
                        track["label_id"],
                        [*(track.get("attributes") or []), *(keyframe.get("attributes") or [])],
                        None,
                    )
                    from_tracks[int(keyframe["frame"])] += 1
        return dict(by_frame), from_tracks

    def frame_bytes(self, task: CvatTask, number: int) -> bytes:
        """The original-quality image file of one frame."""
        with translate_errors(self.url, f"downloading frame {number} of task {task.id}"):
            return self._tasks[task.id].get_frame(number, quality="original").read()


def _is_video(task: Task) -> bool:
    """Whether CVAT made the task from a video file (its frames are then not separate photos)."""
    return (
        str(getattr(task, "mode", "") or "") == "interpolation"
        or str(getattr(task, "data_original_chunk_type", "") or "") == "video"
    )


def video_task_refusal(task: CvatTask) -> str:
    """The one sentence that refuses a video task."""
    return (
        f"task {task.id} ({task.name!r}) was made from a video, which this pull does not import (quadrats are photos in image tasks); "
        "move it out of the project in CVAT, or pass a --status that leaves it out, and pull again"
    )


def status_summary(counts: Counter[str]) -> str:
    """`5 annotation, 4 validation, 3 completed`: a project's tasks per status."""
    return ", ".join(
        f"{counts[s]} {s}" for s in (*TASK_STATUSES, *sorted(set(counts) - set(TASK_STATUSES))) if counts[s]
    )


@contextlib.contextmanager
def translate_errors(url: str, doing: str) -> Iterator[None]:
    """SDK and network failures as one UserError sentence (never the server's raw answer, which may echo secrets)."""
    where = display_url(url)
    try:
        yield
    except (urllib3.exceptions.HTTPError, ConnectionError) as error:
        raise UserError(
            f"cannot reach CVAT at {where} ({_network_reason(error)}) while {doing}; check CVAT_URL and that the server is running"
        ) from None
    except api_exceptions.ApiException as error:
        if error.status == 0:
            raise UserError(
                f"cannot talk to CVAT at {where} while {doing} (TLS or request error); check CVAT_URL"
            ) from None
        if error.status in (401, 403):
            raise UserError(
                f"CVAT at {where} refused access (HTTP {error.status}) while {doing}; check the credentials and that this account may see the project"
            ) from None
        if error.status >= 500:
            raise UserError(
                f"CVAT at {where} answered HTTP {error.status} while {doing}; try again later (a rerun resumes) or ask its administrator"
            ) from None
        raise UserError(
            f"CVAT at {where} answered HTTP {error.status} while {doing}; check CVAT_URL points at a CVAT server"
        ) from None
    except (api_exceptions.ApiTypeError, api_exceptions.ApiValueError, api_exceptions.ApiAttributeError) as error:
        raise UserError(
            f"CVAT at {where} sent an answer cvat-sdk {SDK_VERSION} cannot read while {doing} ({type(error).__name__}); {_NOT_CVAT}"
        ) from None
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        if not _raised_in_sdk(error):
            raise
        raise UserError(
            f"CVAT at {where} sent an incomplete or unreadable answer while {doing} ({type(error).__name__}); {_NOT_CVAT}"
        ) from None


_NOT_CVAT = (
    "check that CVAT_URL is the CVAT server itself (not a proxy, login or error page) and that it runs CVAT 2.x "
    "(the older one tested is 2.29)"
)


def _raised_in_sdk(error: BaseException) -> bool:
    """Whether the error came from inside cvat-sdk (a model built from a server's incomplete answer), not from our code."""
    traceback = error.__traceback__
    while traceback is not None:
        if "cvat_sdk" in traceback.tb_frame.f_code.co_filename:
            return True
        traceback = traceback.tb_next
    return False


def _credentials(settings: Settings) -> PasswordCredentials | AccessTokenCredentials:
    if settings.cvat_access_token:
        return AccessTokenCredentials(settings.cvat_access_token)
    if settings.cvat_username and settings.cvat_password:
        return PasswordCredentials(settings.cvat_username, settings.cvat_password)
    raise UserError(
        "no CVAT credentials: set CVAT_USERNAME and CVAT_PASSWORD, or CVAT_ACCESS_TOKEN, in .env or the environment"
    )


def _who(settings: Settings) -> str:
    if settings.cvat_access_token:
        return "the access token in CVAT_ACCESS_TOKEN"
    return f"user {settings.cvat_username!r} and the password in CVAT_PASSWORD"


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[CvatConnection]:
    """A CVAT session from the settings (URL, credentials, organization), closed on exit."""
    credentials = _credentials(settings)
    url = settings.cvat_url.strip()
    try:
        client = Client(url, logger=_SDK_LOGGER, config=Config(), check_server_version=False)
    except InvalidHostException:
        raise UserError(f"CVAT_URL {display_url(url)!r} is not an http:// or https:// address; fix CVAT_URL") from None
    urllib3_logger = logging.getLogger("urllib3")
    level = urllib3_logger.level
    urllib3_logger.setLevel(logging.ERROR)  # its retry warnings would repeat the one error we print
    try:
        with client:
            with translate_errors(url, "asking for the server version"):
                server_version = client.get_server_version()
            if isinstance(credentials, AccessTokenCredentials) and server_version < ACCESS_TOKENS_SINCE:
                raise UserError(
                    f"CVAT {server_version} at {display_url(url)} has no personal access tokens (CVAT {ACCESS_TOKENS_SINCE} added them); "
                    "leave CVAT_ACCESS_TOKEN empty and set CVAT_USERNAME and CVAT_PASSWORD"
                )
            with translate_errors(url, "logging in"):
                try:
                    client.login(credentials)
                    client.users.retrieve_current_user()  # an access token is only checked by its first use
                except api_exceptions.ApiException as error:
                    if error.status in (400, 401, 403):
                        raise UserError(
                            f"CVAT at {display_url(url)} refused the login with {_who(settings)}; check them"
                        ) from None
                    raise
            if settings.cvat_organization:
                client.organization_slug = settings.cvat_organization
            try:
                yield CvatConnection(client, url, str(server_version))
            finally:
                with contextlib.suppress(Exception):  # a session left open on the server is harmless
                    client.logout()
    finally:
        urllib3_logger.setLevel(level)
