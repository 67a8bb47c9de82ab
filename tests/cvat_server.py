"""A local stand-in for a CVAT 2.x server, for end-to-end tests through the real `cvat-sdk`.

No CVAT can run on a test machine (it needs Docker and a policy engine), so this module answers
the REST endpoints `cvat-sdk` 2.80 calls, with payloads shaped like CVAT 2.x's, and keeps every
write in memory so a test can read back what a command sent.

Usage (from any test: pytest puts `tests/` on `sys.path`)::

    from cvat_server import FakeCvat, add_reef_project, confidence_spec, png_bytes, polygon

    cvat = FakeCvat(version="2.29.0", page_size=2)           # an older server, tiny pages (CVAT's default is 10)
    reef = add_reef_project(cvat)                            # the standard small project (see its docstring), or:
    project = cvat.add_project("Reef", labels=[("Acropora", [confidence_spec()]), ("Porites", [])])
    task = cvat.add_task(project, "Moorea 2021", subset="Train", status="completed",  # new tasks are in `annotation`
                         frames=[("Moorea_2021_03.jpg", png_bytes(64, 48))], segment_size=1,   # one job per frame
                         shapes=[polygon(0, cvat.label_id(project, "Acropora"), [1.5, 2, 30, 2, 30, 20]),
                                 mask(0, cvat.label_id(project, "Porites"), bitmap)],          # RLE as CVAT encodes it
                         tracks=[track(cvat.label_id(project, "Acropora"), [tracked(0, [...])])],
                         gt_frames=[0], gt_shapes=[...])                   # a ground-truth job (validation_mode "gt")
    video = cvat.add_video_task(project, "Dive", "dive.mp4", [png_bytes(64, 48)] * 5)  # one `frames` entry, 5 frames
    pool = cvat.add_task(project, "Honeypots", frames=..., honeypots={2: 4})  # gt_pool: frame 2 shows real frame 4
    with cvat.serve() as url:                                # http://127.0.0.1:<free port>
        ...                                                  # CVAT_URL=url, CVAT_USERNAME=cvat.username, ...
    cvat.frame_requests(task)                                # how many frames the client downloaded
    cvat.annotations[task]["shapes"]                         # what a push wrote back (PUT/PATCH)
    cvat.touch_task(task)                                    # bump updated_date, like an annotator's edit
    cvat.fail(r"/api/tasks/\\d+/data$", status=500, skip=2)   # the 3rd frame request answers 500

What it answers (everything else is 404, like an unknown CVAT route):
- `GET /api/server/about` (anonymous; `version` is configurable, e.g. an older "2.29.0" or "2.80.0").
- `POST /api/auth/login` with JSON username/password: 200 with `{"key"}`, `sessionid` and
  `csrftoken` cookies; wrong credentials: 400 `{"non_field_errors": [...]}` as CVAT does.
  `POST /api/auth/logout`.
- Authentication on every other route: the session cookie, `Authorization: Bearer <access token>`
  (what the SDK sends for a personal access token; only from version 2.48, which added them) or
  the legacy `Authorization: Token <login key>`;
  otherwise 401. Writes with a session cookie need the `X-CSRFToken` header (else 403), as Django demands.
- `GET /api/users/self`; `GET /api/projects` (filters `name`, `search`, `id`), `GET /api/projects/{id}`;
  `GET /api/tasks` (filters `project_id`, `status`, `subset`, `name`), `GET /api/tasks/{id}`;
  `GET /api/labels?project_id=|task_id=|job_id=` (top-level labels, a skeleton's points nested as `sublabels`);
  `GET /api/jobs?task_id=&type=`, `GET /api/jobs/{id}`. Lists are paginated
  `{"count","next","previous","results"}` with `page`/`page_size`, `page_size` defaulting to
  `FakeCvat.page_size`, 10 as in CVAT (`add_reef_project` holds 12 tasks, so clients walk two pages).
- `GET /api/tasks/{id}/data/meta` and `/api/jobs/{id}/data/meta` (frames with name, width, height,
  `deleted_frames`; a video task lists one frame entry named after the video, `size` counts its frames);
  `GET /api/tasks/{id}/data?type=frame&number=N&quality=original` (the stored image bytes; a honeypot
  frame answers its real frame's bytes); `GET /api/tasks/{id}/data?type=chunk&number=N&quality=original`
  (a zip of `data_chunk_size` frames, what cvat-sdk's `TaskDataset` and `auto_annotation.annotate_task`
  download); `GET /api/tasks/{id}/validation_layout` (CVAT >= 2.23).
- `GET|PUT|DELETE /api/tasks/{id}/annotations` and `PATCH ...?action=create|update|delete`:
  `{"version","tags","shapes","tracks"}`; new shapes get ids, `version` grows with each write. The same on
  `/api/jobs/{id}/annotations`: an annotation job sees and writes the task's shapes on its frames; a
  ground-truth job keeps its own, which task annotations leave out in `gt` mode and include in `gt_pool` mode.

How CVAT answers, as its own recorded test database shows (cvat-ai/cvat tests/python/shared/assets) and
this server imitates: tasks have several jobs (`segment_size`), a new task is in status `annotation` and few
are `completed`; shapes carry `source`, `score`, `elements`; a `mask`'s `points` are the RLE run lengths
(starting with a run of 0s) followed by `left, top, right, bottom` (inclusive); `gt_pool` tasks append their
validation frames after the regular ones and repeat their file names on honeypot frames inside the jobs.

An older `version` leaves out task fields that later CVAT releases added, so a client is checked
against both shapes of answer. `requests` logs every call (method, path, query, headers) for
assertions, e.g. that no request carried a password in its URL.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import json
import re
import secrets
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from cvat_sdk.masks import encode_mask
from PIL import Image

# Task fields that CVAT releases after 2.29 added; an older FakeCvat leaves them out.
NEWER_TASK_FIELDS = ("validation_mode", "assignee_updated_date", "initial_replicas")
VALIDATION_LAYOUT_SINCE = (2, 23)  # CVAT 2.23 added honeypots (validation_mode gt_pool) and /validation_layout
ACCESS_TOKENS_SINCE = (2, 48)  # CVAT 2.48.0 added personal access tokens ("Support for API access tokens")


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Failure:
    """Answer `status` to requests matching `method` and `path` (a regex), after `skip` matches.

    `body` (bytes, sent as `content_type`) replaces CVAT's JSON error: garbage such as a proxy's HTML page.
    """

    path: str
    status: int
    method: str = "GET"
    skip: int = 0
    times: int = 1
    body: bytes | None = None
    content_type: str = "application/json"


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (30, 120, 160), fmt: str = "PNG") -> bytes:
    """A tiny solid image, encoded like the files annotators upload."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def polygon(
    frame: int,
    label_id: int,
    points: list[float],
    z_order: int = 0,
    attributes: list[dict] | None = None,
    shape_type: str = "polygon",
    occluded: bool = False,
    source: str = "manual",
    score: float = 1.0,
) -> dict[str, Any]:
    """A shape as CVAT 2.x returns it in `/annotations` (pixel coordinates, flat points)."""
    return {
        "type": shape_type,
        "occluded": occluded,
        "outside": False,
        "z_order": z_order,
        "rotation": 0.0,
        "points": list(points),
        "frame": frame,
        "label_id": label_id,
        "group": 0,
        "source": source,
        "score": score,
        "attributes": attributes or [],
        "elements": [],
    }


def mask(
    frame: int,
    label_id: int,
    bitmap: np.ndarray,
    z_order: int = 0,
    attributes: list[dict] | None = None,
    source: str = "semi-auto",
) -> dict[str, Any]:
    """A `mask` shape (a brush or SAM drawing) over a full-image boolean bitmap, RLE-encoded by cvat-sdk's own encoder
    (the one CVAT's server and auto-annotation use): run lengths over the bitmap's bounding box, then left, top, right, bottom."""
    return polygon(
        frame,
        label_id,
        encode_mask(np.asarray(bitmap, dtype=bool)),
        z_order,
        attributes,
        shape_type="mask",
        source=source,
    )


def tracked(
    frame: int,
    points: list[float],
    outside: bool = False,
    z_order: int = 0,
    shape_type: str = "polygon",
    attributes: list[dict] | None = None,
) -> dict[str, Any]:
    """One keyframe of a track, as in `/annotations` `tracks[].shapes` (CVAT stores only keyframes there)."""
    return {
        "type": shape_type,
        "occluded": False,
        "outside": outside,
        "z_order": z_order,
        "rotation": 0.0,
        "points": list(points),
        "frame": frame,
        "attributes": attributes or [],
    }


def track(label_id: int, shapes: list[dict[str, Any]], source: str = "manual") -> dict[str, Any]:
    """A track (CVAT's interpolated annotation across frames) starting at its first keyframe."""
    return {
        "frame": min(s["frame"] for s in shapes),
        "label_id": label_id,
        "group": 0,
        "source": source,
        "shapes": list(shapes),
        "attributes": [],
        "elements": [],
    }


def confidence_spec() -> dict[str, Any]:
    """The `confidence` number attribute reef projects define on every label (CVAT stores numbers as strings)."""
    return {
        "name": "confidence",
        "mutable": False,
        "input_type": "number",
        "default_value": "100",
        "values": ["0", "100", "1"],
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeCvat:
    """In-memory CVAT: projects, tasks, labels, frames and annotations, served over HTTP by `serve()`."""

    version: str = "2.80.0"
    username: str = "annotator"
    password: str = "s3cret-Passw0rd!"
    access_token: str = "pat-0123456789abcdef-token"
    page_size: int = 10  # CVAT's default page size
    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    frames: dict[int, list[tuple[str, bytes, int, int]]] = field(default_factory=dict)
    annotations: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted_frames: dict[int, list[int]] = field(default_factory=dict)  # frames removed in CVAT's UI, per task
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    gt_annotations: dict[int, dict[str, Any]] = field(default_factory=dict)  # per ground-truth job
    honeypots: dict[int, dict[int, int]] = field(default_factory=dict)  # per gt_pool task: {honeypot frame: real frame}
    videos: dict[int, str] = field(default_factory=dict)  # per video task: the video's file name
    requests: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._sessions: dict[str, str] = {}  # sessionid -> csrftoken
        self._login_key = secrets.token_hex(20)

    def _next_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    # ---- building the server's content -------------------------------------------------------

    def add_project(self, name: str, labels: list[tuple[str, list[dict[str, Any]]]] = ()) -> int:
        """A project with `labels` as (name, attribute specs); returns its id."""
        with self._lock:
            pid = self._next_id("project")
            self.projects[pid] = {
                "id": pid,
                "name": name,
                "owner": self._user(),
                "assignee": None,
                "bug_tracker": "",
                "guide_id": None,
                "task_subsets": [],
                "dimension": "2d",
                "status": "annotation",
                "organization": None,
                "created_date": _now(),
                "updated_date": _now(),
                "source_storage": None,
                "target_storage": None,
                "assignee_updated_date": None,
            }
            for label_name, specs in labels:
                lid = self._next_id("label")
                attributes = [{"id": self._next_id("attribute"), **spec} for spec in specs]
                self.labels[lid] = {
                    "id": lid,
                    "name": label_name,
                    "color": f"#{lid * 40 % 256:02x}8040",
                    "attributes": attributes,
                    "type": "any",
                    "svg": "",
                    "sublabels": [],
                    "project_id": pid,
                    "parent_id": None,
                    "has_parent": False,
                }
            return pid

    def label_id(self, project_id: int, name: str) -> int:
        """The id of the project's label called `name`."""
        return next(
            lid for lid, label in self.labels.items() if label["project_id"] == project_id and label["name"] == name
        )

    def attribute_id(self, label_id: int, name: str) -> int:
        """The spec id of a label's attribute, as shapes refer to it."""
        return next(a["id"] for a in self.labels[label_id]["attributes"] if a["name"] == name)

    def add_skeleton_label(self, project_id: int, name: str, points: list[str]) -> int:
        """A skeleton label whose points are sublabels (nested in `/api/labels`, never listed at the top)."""
        with self._lock:
            lid = self._next_id("label")
            sublabels = [
                {
                    "id": self._next_id("label"),
                    "name": point,
                    "color": "#d12345",
                    "attributes": [],
                    "type": "points",
                    "has_parent": True,
                }
                for point in points
            ]
            self.labels[lid] = {
                "id": lid,
                "name": name,
                "color": "#33ddff",
                "attributes": [],
                "type": "skeleton",
                "sublabels": sublabels,
                "svg": "".join(
                    f'<circle r="1.5" cx="{10 * i}" cy="10" data-label-id="{sub["id"]}" data-label-name="{sub["name"]}"></circle>'
                    for i, sub in enumerate(sublabels)
                ),
                "project_id": project_id,
                "parent_id": None,
                "has_parent": False,
            }
            return lid

    def add_task(
        self,
        project_id: int,
        name: str,
        frames: list[tuple[str, bytes]],
        shapes: list[dict[str, Any]] = (),
        subset: str = "",
        status: str = "annotation",
        tracks: list[dict[str, Any]] = (),
        segment_size: int | None = None,
        gt_frames: list[int] = (),
        gt_shapes: list[dict[str, Any]] = (),
        honeypots: dict[int, int] | None = None,
    ) -> int:
        """A task holding `frames` as (file name, image bytes), `shapes` and `tracks`; returns its id.

        `status` is `annotation` as for any new CVAT task. `segment_size` frames per annotation job (default: one job).
        `gt_frames` makes a ground-truth job over those frames holding `gt_shapes` (validation_mode `gt`).
        `honeypots` {frame: real frame} makes a `gt_pool` task: each such frame is a placeholder repeating the
        real frame's name and pixels; the ground-truth job covers the real frames (the pool, after the regular ones).
        """
        with self._lock:
            tid = self._next_id("task")
            sizes = [Image.open(io.BytesIO(data)).size for _, data in frames]
            stored = [(fname, data, w, h) for (fname, data), (w, h) in zip(frames, sizes)]
            for honeypot, real in (honeypots or {}).items():
                stored[honeypot] = stored[real]
            self.frames[tid] = stored
            if honeypots:
                self.honeypots[tid] = dict(honeypots)
                gt_frames = sorted(set(honeypots.values()))
            validation_mode = "gt_pool" if honeypots else ("gt" if gt_frames else None)
            regular = [n for n in range(len(frames)) if not (honeypots and n in gt_frames)]
            size = segment_size or max(len(regular), 1)
            self.tasks[tid] = {
                "id": tid,
                "name": name,
                "project_id": project_id,
                "mode": "annotation",
                "owner": self._user(),
                "assignee": None,
                "bug_tracker": "",
                "created_date": _now(),
                "updated_date": _now(),
                "overlap": 0,
                "segment_size": size,
                "status": status,
                "data_chunk_size": 72,
                "data_compressed_chunk_type": "imageset",
                "data_original_chunk_type": "imageset",
                "data_cloud_storage_id": None,
                "guide_id": None,
                "size": len(frames),
                "image_quality": 70,
                "data": tid,
                "dimension": "2d",
                "subset": subset,
                "organization": None,
                "target_storage": None,
                "source_storage": None,
                "validation_mode": validation_mode,
                "assignee_updated_date": None,
                "initial_replicas": 0,
            }
            for start in range(0, len(regular), size):
                self._add_job(tid, regular[start : start + size], "annotation")
            if gt_frames:
                job = self._add_job(tid, list(gt_frames), "ground_truth")
                self.gt_annotations[job] = {
                    "version": 0,
                    "tags": [],
                    "shapes": [{**copy.deepcopy(s), "id": self._next_id("shapes")} for s in gt_shapes],
                    "tracks": [],
                }
            self.annotations[tid] = {"version": 0, "tags": [], "shapes": [], "tracks": []}
            for shape in shapes:
                self.annotations[tid]["shapes"].append({**copy.deepcopy(shape), "id": self._next_id("shapes")})
            for item in tracks:
                self.annotations[tid]["tracks"].append({**copy.deepcopy(item), "id": self._next_id("tracks")})
            if subset and subset not in self.projects[project_id]["task_subsets"]:
                self.projects[project_id]["task_subsets"].append(subset)
            return tid

    def add_video_task(
        self,
        project_id: int,
        name: str,
        video_name: str,
        frames: list[bytes],
        tracks: list[dict[str, Any]] = (),
        shapes: list[dict[str, Any]] = (),
        status: str = "annotation",
    ) -> int:
        """A task made from one video file: `data/meta` lists a single frame entry named after the video."""
        tid = self.add_task(
            project_id,
            name,
            [(f"{video_name}#{i}", data) for i, data in enumerate(frames)],
            shapes=shapes,
            tracks=tracks,
            status=status,
        )
        with self._lock:
            self.videos[tid] = video_name
            self.tasks[tid].update(
                mode="interpolation", data_original_chunk_type="video", data_compressed_chunk_type="video", overlap=5
            )
            for job in self.jobs.values():
                if job["task_id"] == tid:
                    job.update(
                        mode="interpolation", data_original_chunk_type="video", data_compressed_chunk_type="video"
                    )
        return tid

    def _add_job(self, tid: int, frames: list[int], job_type: str) -> int:
        jid = self._next_id("job")
        self.jobs[jid] = {
            "id": jid,
            "task_id": tid,
            "frames": list(frames),
            "type": job_type,
            "stage": "annotation",
            "state": "new",
            "updated_date": _now(),
        }
        return jid

    def task_jobs(self, task_id: int, job_type: str | None = None) -> list[int]:
        """The ids of a task's jobs (of one type: `annotation` or `ground_truth`)."""
        return [jid for jid, job in self.jobs.items() if job["task_id"] == task_id and job_type in (None, job["type"])]

    def touch_task(self, task_id: int, **changes: Any) -> None:
        """Change a task (e.g. `status=`) and bump its `updated_date`, as any edit in CVAT does."""
        with self._lock:
            self.tasks[task_id].update(changes, updated_date=_now())

    def fail(
        self,
        path: str,
        status: int = 500,
        method: str = "GET",
        skip: int = 0,
        times: int = 1,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Make the next matching requests (after `skip` good ones) answer `status` (with `body` if given)."""
        with self._lock:
            self.failures.append(Failure(path, status, method, skip, times, body, content_type))

    def frame_requests(self, task_id: int | None = None) -> int:
        """How many frame downloads the server answered (for one task, or all)."""
        task = str(task_id) if task_id is not None else r"\d+"
        pattern = re.compile(rf"/api/tasks/{task}/data$")
        return sum(
            1 for r in self.requests if r.method == "GET" and pattern.match(r.path) and r.query.get("type") == "frame"
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 at a free port; yields the base URL, stops the server on exit."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self.url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    # ---- payloads ------------------------------------------------------------------------------

    def _user(self) -> dict[str, Any]:
        return {"url": f"{self.url}/api/users/1", "id": 1, "username": self.username, "first_name": "", "last_name": ""}

    def _task_payload(self, task: dict[str, Any]) -> dict[str, Any]:
        tid = task["id"]
        jobs = [self.jobs[j] for j in self.task_jobs(tid)]
        payload = {
            "url": f"{self.url}/api/tasks/{tid}",
            **copy.deepcopy(task),
            "project_name": self.projects[task["project_id"]]["name"],
            "jobs": {
                "count": len(jobs),
                "completed": sum(self._job_state(j)[2] == "completed" for j in jobs),
                "validation": sum(self._job_state(j)[1] == "validation" for j in jobs),
                "url": f"{self.url}/api/jobs?task_id={tid}",
            },
            "labels": {"url": f"{self.url}/api/labels?task_id={tid}"},
        }
        if self._is_older():
            for name in NEWER_TASK_FIELDS:
                payload.pop(name, None)
        return payload

    def _project_payload(self, project: dict[str, Any]) -> dict[str, Any]:
        pid = project["id"]
        return {
            "url": f"{self.url}/api/projects/{pid}",
            **copy.deepcopy(project),
            "tasks": {
                "count": sum(t["project_id"] == pid for t in self.tasks.values()),
                "url": f"{self.url}/api/tasks?project_id={pid}",
            },
            "labels": {"url": f"{self.url}/api/labels?project_id={pid}"},
        }

    def _job_state(self, job: dict[str, Any]) -> tuple[str, str, str]:
        """(status, stage, state): a job follows its task's status unless a test set its own."""
        status = job.get("status") or self.tasks[job["task_id"]]["status"]
        stage = {"completed": "acceptance", "validation": "validation"}.get(status, "annotation")
        return status, stage, "completed" if status == "completed" else job.get("state", "new")

    def _job_payload(self, job: dict[str, Any]) -> dict[str, Any]:
        jid, task = job["id"], self.tasks[job["task_id"]]
        status, stage, state = self._job_state(job)
        frames = job["frames"]
        return {
            "url": f"{self.url}/api/jobs/{jid}",
            "id": jid,
            "task_id": task["id"],
            "project_id": task["project_id"],
            "assignee": None,
            "guide_id": None,
            "dimension": "2d",
            "bug_tracker": None,
            "status": status,
            "stage": stage,
            "state": state,
            "mode": task["mode"],
            "frame_count": len(frames),
            "start_frame": min(frames, default=0),
            "stop_frame": max(frames, default=0),
            "data_chunk_size": 72,
            "data_compressed_chunk_type": task["data_compressed_chunk_type"],
            "data_original_chunk_type": task["data_original_chunk_type"],
            "created_date": task["created_date"],
            "updated_date": job["updated_date"],
            "issues": {"count": 0, "url": f"{self.url}/api/issues?job_id={jid}"},
            "labels": {"url": f"{self.url}/api/labels?job_id={jid}"},
            "type": job["type"],
            "organization": None,
            "target_storage": None,
            "source_storage": None,
            "assignee_updated_date": None,
            "parent_job_id": None,
            "consensus_replicas": 0,
        }

    def _meta_payload(self, tid: int, job: dict[str, Any] | None = None) -> dict[str, Any]:
        frames = self.frames[tid]
        numbers = job["frames"] if job else list(range(len(frames)))
        if tid in self.videos:  # CVAT lists a video once, with its size, however many frames it holds
            _, _, w, h = frames[0]
            entries = [
                {"width": w, "height": h, "name": self.videos[tid], "related_files": 0, "has_related_context": False}
            ]
        else:
            entries = [
                {
                    "width": frames[n][2],
                    "height": frames[n][3],
                    "name": frames[n][0],
                    "related_files": 0,
                    "has_related_context": False,
                }
                for n in range(min(numbers, default=0), max(numbers, default=-1) + 1)
            ]
        return {
            "chunk_size": 72,
            "size": len(numbers),
            "image_quality": 70,
            "start_frame": min(numbers, default=0),
            "stop_frame": max(numbers, default=0),
            "frame_filter": "",
            "frames": entries,
            "deleted_frames": [n for n in self.deleted_frames.get(tid, []) if n in numbers],
            "included_frames": numbers if job and job["type"] == "ground_truth" else None,
            "chunks_updated_date": self.tasks[tid]["created_date"],
            "chapters": None,
            "storage": "local",
            "cloud_storage_id": None,
        }

    def _validation_layout(self, tid: int) -> dict[str, Any]:
        task = self.tasks[tid]
        if task["validation_mode"] is None:
            return {"mode": None}
        [gt_job] = self.task_jobs(tid, "ground_truth")
        pool = self.honeypots.get(tid, {})
        return {
            "mode": task["validation_mode"],
            "frames_per_job_count": None,
            "validation_frames": self.jobs[gt_job]["frames"],
            "disabled_frames": [],
            "honeypot_count": len(pool),
            "honeypot_frames": sorted(pool),
            "honeypot_real_frames": [pool[n] for n in sorted(pool)],
        }

    def _is_older(self, than: tuple[int, int] = (2, 30)) -> bool:
        major, minor = (int(part) for part in self.version.split(".")[:2])
        return (major, minor) < than

    # ---- request handling ------------------------------------------------------------------------

    def _handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(Request(method, path, query, headers, body))
            for failure in self.failures:
                if failure.times > 0 and failure.method == method and re.fullmatch(failure.path, path):
                    if failure.skip > 0:
                        failure.skip -= 1
                        continue
                    failure.times -= 1
                    if failure.body is not None:
                        return failure.status, {"Content-Type": failure.content_type}, failure.body
                    return _json(failure.status, {"detail": "Internal server error (injected by the test)."})
            if path == "/api/server/about" and method == "GET":
                return _json(
                    200,
                    {
                        "name": "Computer Vision Annotation Tool",
                        "description": "CVAT",
                        "version": self.version,
                        "logo_url": f"{self.url}/api/server/logo",
                        "subtitle": "Open Data Annotation Platform",
                    },
                )
            if path == "/api/auth/login" and method == "POST":
                return self._login(body)
            refusal = self._refusal(method, headers)
            if refusal:
                return refusal
            return self._route(method, path, query, body)

    def _login(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return _json(400, {"detail": "JSON parse error"})
        if data.get("username") != self.username or data.get("password") != self.password:
            return _json(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        session, csrf = secrets.token_hex(16), secrets.token_hex(16)
        self._sessions[session] = csrf
        status, headers, payload = _json(200, {"key": self._login_key})
        headers["Set-Cookie"] = [
            f"sessionid={session}; HttpOnly; Path=/; SameSite=Lax",
            f"csrftoken={csrf}; Path=/; SameSite=Lax",
        ]
        return status, headers, payload

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        """None when the request is authenticated; else CVAT's 401 (no credentials) or 403 (CSRF) answer."""
        authorization = headers.get("authorization", "")
        if authorization == f"Token {self._login_key}" or (
            authorization == f"Bearer {self.access_token}" and not self._is_older(ACCESS_TOKENS_SINCE)
        ):
            return None
        cookies = SimpleCookie(headers.get("cookie", ""))
        session = cookies["sessionid"].value if "sessionid" in cookies else None
        if session not in self._sessions:
            return _json(401, {"detail": "Authentication credentials were not provided."})
        if method not in ("GET", "HEAD", "OPTIONS") and headers.get("x-csrftoken") != self._sessions[session]:
            return _json(403, {"detail": "CSRF Failed: CSRF token missing."})
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/api/auth/logout" and method == "POST":
            return _json(200, {"detail": "Successfully logged out."})
        if path == "/api/users/self" and method == "GET":
            return _json(
                200,
                {
                    **self._user(),
                    "email": "",
                    "groups": ["user"],
                    "is_staff": False,
                    "is_superuser": False,
                    "is_active": True,
                    "last_login": _now(),
                    "date_joined": _now(),
                    "has_analytics_access": False,
                },
            )
        if path == "/api/projects" and method == "GET":
            rows = [
                p
                for p in self.projects.values()
                if _matches(p, query, ("name", "id")) and query.get("search", "").lower() in p["name"].lower()
            ]
            return self._page(path, query, [self._project_payload(p) for p in rows])
        if path == "/api/tasks" and method == "GET":
            rows = [
                t for t in self.tasks.values() if _matches(t, query, ("project_id", "status", "subset", "name", "id"))
            ]
            return self._page(path, query, [self._task_payload(t) for t in rows])
        if path == "/api/labels" and method == "GET":
            task_id = query.get("task_id") or (
                str(self.jobs[int(query["job_id"])]["task_id"]) if int(query.get("job_id", 0)) in self.jobs else None
            )
            project_id = query.get("project_id") or (
                self.tasks.get(int(task_id), {}).get("project_id") if task_id else None
            )
            rows = [lb for lb in self.labels.values() if project_id is None or str(lb["project_id"]) == str(project_id)]
            return self._page(path, query, copy.deepcopy(rows))
        if path == "/api/jobs" and method == "GET":
            rows = [
                job
                for job in self.jobs.values()
                if ("task_id" not in query or str(job["task_id"]) == query["task_id"])
                and query.get("type", job["type"]) == job["type"]
            ]
            return self._page(path, query, [self._job_payload(job) for job in rows])
        match = re.fullmatch(r"/api/(projects|tasks|jobs)/(\d+)(/.*)?", path)
        if not match:
            return _json(404, {"detail": "Not found."})
        kind, oid, rest = match.group(1), int(match.group(2)), match.group(3) or ""
        table = {"projects": self.projects, "tasks": self.tasks, "jobs": self.jobs}[kind]
        if oid not in table:
            return _json(404, {"detail": "Not found."})
        if rest == "" and method == "GET":
            payload = {"projects": self._project_payload, "tasks": self._task_payload, "jobs": self._job_payload}[kind]
            return _json(200, payload(table[oid]))
        if kind == "jobs":
            job = self.jobs[oid]
            if rest == "/data/meta" and method == "GET":
                return _json(200, self._meta_payload(job["task_id"], job))
            if rest == "/annotations":
                return self._job_annotations(job, method, query, body)
            return _json(404, {"detail": "Not found."})
        if kind == "tasks" and rest == "/data/meta" and method == "GET":
            return _json(200, self._meta_payload(oid))
        if (
            kind == "tasks"
            and rest == "/validation_layout"
            and method == "GET"
            and not self._is_older(VALIDATION_LAYOUT_SINCE)
        ):
            return _json(200, self._validation_layout(oid))
        if kind == "tasks" and rest == "/data" and method == "GET":
            return self._frame(oid, query)
        if kind == "tasks" and rest == "/annotations":
            return self._annotations(oid, method, query, body)
        return _json(404, {"detail": "Not found."})

    def _page(self, path: str, query: dict[str, str], rows: list[dict[str, Any]]) -> tuple[int, dict[str, str], bytes]:
        page, size = int(query.get("page", 1)), int(query.get("page_size", self.page_size))
        if page < 1 or (page - 1) * size > max(len(rows) - 1, 0):
            return _json(404, {"detail": "Invalid page."})

        def link(number: int) -> str | None:
            return f"{self.url}{path}?{urlencode({**query, 'page': number})}"

        return _json(
            200,
            {
                "count": len(rows),
                "next": link(page + 1) if page * size < len(rows) else None,
                "previous": link(page - 1) if page > 1 else None,
                "results": rows[(page - 1) * size : page * size],
            },
        )

    def _frame(self, tid: int, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if query.get("type") == "chunk":
            return self._chunk(tid, query)
        if query.get("type") != "frame":
            return _json(400, {"detail": "Only type=frame and type=chunk are answered by this test server."})
        number = int(query.get("number", -1))
        if not 0 <= number < len(self.frames[tid]):
            return _json(400, {"detail": f"The frame number should be in the [0, {len(self.frames[tid]) - 1}] range"})
        data = self.frames[tid][number][1]
        try:
            content_type = f"image/{Image.open(io.BytesIO(data)).format.lower()}"
        except OSError:  # a test serving broken bytes on purpose
            content_type = "application/octet-stream"
        return 200, {"Content-Type": content_type}, data

    def _chunk(self, tid: int, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """An "imageset" chunk as CVAT serves it: a zip of `data_chunk_size` frames' files, in frame order (deleted ones too)."""
        size = self.tasks[tid]["data_chunk_size"]
        number = int(query.get("number", -1))
        frames = self.frames[tid][number * size : (number + 1) * size] if number >= 0 else []
        if not frames:
            return _json(
                400, {"detail": f"The chunk number should be in the [0, {(len(self.frames[tid]) - 1) // size}] range"}
            )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for index, (name, data, _, _) in enumerate(frames, start=number * size):
                archive.writestr(f"{index:06d}{PurePosixPath(name).suffix}", data)
        return 200, {"Content-Type": "application/zip"}, buffer.getvalue()

    def _annotations(
        self, tid: int, method: str, query: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        current = self.annotations[tid]
        if method == "GET":
            answer = copy.deepcopy(current)
            if (
                self.tasks[tid]["validation_mode"] == "gt_pool"
            ):  # the pool's ground truth is the task's own annotation there
                for job in self.task_jobs(tid, "ground_truth"):
                    answer["shapes"] += copy.deepcopy(self.gt_annotations[job]["shapes"])
            return _json(200, answer)
        if method == "DELETE":
            self.annotations[tid] = {"version": current["version"] + 1, "tags": [], "shapes": [], "tracks": []}
            return 204, {}, b""
        data = json.loads(body or b"{}")
        incoming = {kind: data.get(kind, []) for kind in ("tags", "shapes", "tracks")}
        if method == "PUT":
            current = {"version": current["version"], "tags": [], "shapes": [], "tracks": []}
            action = "create"
        elif method == "PATCH":
            action = query.get("action", "")
            if action not in ("create", "update", "delete"):
                return _json(400, {"detail": "Please specify a correct 'action' for the request"})
        else:
            return _json(405, {"detail": f'Method "{method}" not allowed.'})
        for kind, items in incoming.items():
            if action == "create":
                for item in items:
                    item["id"] = self._next_id(kind)
                current[kind].extend(items)
            else:
                ids = {item.get("id") for item in items}
                kept = [old for old in current[kind] if old["id"] not in ids]
                current[kind] = kept + (items if action == "update" else [])
        current["version"] += 1
        self.annotations[tid] = current
        self.tasks[tid]["updated_date"] = _now()
        return _json(200, {"version": current["version"], **incoming})

    def _job_annotations(
        self, job: dict[str, Any], method: str, query: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """A job's annotations: a ground-truth job keeps its own; an annotation job reads and writes the task's on its frames."""
        frames = set(job["frames"])
        if job["type"] == "ground_truth" and method == "GET":
            return _json(200, copy.deepcopy(self.gt_annotations[job["id"]]))
        if job["type"] == "ground_truth":
            tid, store = job["task_id"], self.annotations
            saved = store[tid]
            store[tid] = self.gt_annotations[job["id"]]
            try:
                status, headers, payload = self._annotations(tid, method, query, body)
                self.gt_annotations[job["id"]] = store[tid]
            finally:
                store[tid] = saved
            return status, headers, payload
        tid = job["task_id"]
        if method == "GET":
            return _json(200, _only_frames(self.annotations[tid], frames))
        if method in ("PUT", "DELETE"):  # replaces this job's frames only
            kept = {
                kind: [item for item in self.annotations[tid][kind] if item["frame"] not in frames]
                for kind in ("tags", "shapes", "tracks")
            }
            status, headers, payload = self._annotations(tid, method, query, body)
            for kind, items in kept.items():
                self.annotations[tid][kind] = items + self.annotations[tid][kind]
            job["updated_date"] = _now()
            return status, headers, payload
        job["updated_date"] = _now()
        return self._annotations(tid, method, query, body)


def _only_frames(annotations: dict[str, Any], frames: set[int]) -> dict[str, Any]:
    return {
        "version": annotations["version"],
        "tags": [t for t in annotations["tags"] if t["frame"] in frames],
        "shapes": [s for s in annotations["shapes"] if s["frame"] in frames],
        "tracks": [t for t in annotations["tracks"] if t["frame"] in frames],
    }


def _matches(row: dict[str, Any], query: dict[str, str], keys: tuple[str, ...]) -> bool:
    return all(str(row.get(key)) == query[key] for key in keys if key in query)


def _json(status: int, payload: Any) -> tuple[int, dict[str, Any], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _handler_for(cvat: FakeCvat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, out_headers, payload = cvat._handle(
                    self.command, parts.path.rstrip("/") or "/", query, headers, body
                )
            except (
                Exception
            ) as error:  # a bug here answers 500, as a crashing server would, rather than hanging the client
                status, out_headers, payload = _json(500, {"detail": f"{type(error).__name__}: {error}"})
            self.send_response(status)
            for key, value in out_headers.items():
                for item in value if isinstance(value, list) else [value]:
                    self.send_header(key, item)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # the request log is `cvat.requests`
            pass

    return Handler


@dataclass(frozen=True)
class ReefProject:
    """Ids of the small standard project `add_reef_project` builds."""

    project: int
    other_project: int
    train_task: int
    val_task: int
    test_task: int
    open_task: int
    acropora: int
    porites: int
    unfinished_tasks: tuple[int, ...] = ()  # the eight Rangiroa tasks in `annotation` or `validation`
    skeleton: int = 0


def add_reef_project(cvat: FakeCvat, name: str = "Reef 2021") -> ReefProject:
    """A small reef project covering the cases a pull must handle, plus an unrelated project.

    - train task ("Train", two jobs of one frame): Moorea_2021_03.jpg (64x48) with a sub-pixel polygon (z_order 2,
      confidence 80), a closed polyline outline (growth_form attribute), a rectangle (skipped), a
      two-point polygon (skipped: too few points) and a polygon reaching outside the image
      (clipped); Moorea_2021_04.jpg (40x30) with one Porites polygon.
    - val task ("Validation"): another Moorea_2021_03.jpg (same name, different pixels) and
      photos/IMG_0001.png (in a subfolder; its name does not follow the site_year_quadrat pattern);
      a ground-truth job over IMG_0001.png whose Porites polygon task annotations leave out (validation_mode `gt`).
    - test task ("Test"): Tahiti_2020_11.jpg. These three are the project's only `completed` tasks.
    - open task (no subset, status `annotation`): Tahiti_2020_12.jpg; only `--status all` takes it.
    - eight more tasks, Rangiroa_2022_01..08.jpg (16x16, one Porites polygon each), alternately in `validation`
      and `annotation`: 12 tasks in all, so task lists take two pages of CVAT's 10.
    - labels Acropora, Porites, Pocillopora and a skeleton "Colony axis" whose two points are nested sublabels.
    """
    growth = {
        "name": "growth_form",
        "mutable": False,
        "input_type": "select",
        "default_value": "branching",
        "values": ["branching", "massive"],
    }
    project = cvat.add_project(
        name, labels=[("Acropora", [confidence_spec(), growth]), ("Porites", [confidence_spec()]), ("Pocillopora", [])]
    )
    skeleton = cvat.add_skeleton_label(project, "Colony axis", ["base", "tip"])
    other = cvat.add_project("Seagrass survey", labels=[("Posidonia", [])])
    acropora, porites = cvat.label_id(project, "Acropora"), cvat.label_id(project, "Porites")
    confidence, growth_id = cvat.attribute_id(acropora, "confidence"), cvat.attribute_id(acropora, "growth_form")
    train = cvat.add_task(
        project,
        "Moorea transect A",
        subset="Train",
        status="completed",
        segment_size=1,
        frames=[
            ("Moorea_2021_03.jpg", png_bytes(64, 48, (200, 90, 40), fmt="JPEG")),
            ("Moorea_2021_04.jpg", png_bytes(40, 30, (90, 200, 40), fmt="JPEG")),
        ],
        shapes=[
            polygon(
                0,
                acropora,
                [1.5, 2.25, 30.5, 2.25, 30.5, 20.75],
                z_order=2,
                attributes=[{"spec_id": confidence, "value": "80"}],
            ),
            polygon(
                0,
                acropora,
                [40, 10, 60, 10, 60, 40, 40, 40, 40.5, 10.5],
                z_order=1,
                shape_type="polyline",
                attributes=[{"spec_id": growth_id, "value": "massive"}],
            ),
            polygon(0, porites, [5, 5, 10, 10], shape_type="rectangle"),
            polygon(0, porites, [5, 5, 10, 10]),
            polygon(1, porites, [-4, 2, 20, 2, 20, 25], occluded=True),
        ],
    )
    val = cvat.add_task(
        project,
        "Moorea transect B",
        subset="Validation",
        status="completed",
        frames=[
            ("Moorea_2021_03.jpg", png_bytes(64, 48, (10, 10, 220))),
            ("photos/IMG_0001.png", png_bytes(32, 32)),
        ],
        shapes=[polygon(0, porites, [10, 10, 50, 10, 30, 40]), polygon(1, acropora, [1, 1, 31, 1, 16, 31])],
        gt_frames=[1],
        gt_shapes=[polygon(1, porites, [2, 2, 30, 2, 16, 30])],
    )
    test = cvat.add_task(
        project,
        "Tahiti",
        subset="Test",
        status="completed",
        frames=[("Tahiti_2020_11.jpg", png_bytes(48, 48, fmt="JPEG"))],
        shapes=[polygon(0, acropora, [2, 2, 40, 2, 20, 40])],
    )
    open_task = cvat.add_task(
        project,
        "Tahiti (in progress)",
        status="annotation",
        frames=[("Tahiti_2020_12.jpg", png_bytes(48, 48))],
        shapes=[polygon(0, porites, [2, 2, 40, 2, 20, 40])],
    )
    unfinished = tuple(
        cvat.add_task(
            project,
            f"Rangiroa transect {i}",
            status="validation" if i % 2 else "annotation",
            frames=[(f"Rangiroa_2022_{i:02d}.jpg", png_bytes(16, 16))],
            shapes=[polygon(0, porites, [1, 1, 14, 1, 8, 14])],
        )
        for i in range(1, 9)
    )
    return ReefProject(project, other, train, val, test, open_task, acropora, porites, unfinished, skeleton)
