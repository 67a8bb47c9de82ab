"""Pre-annotate a CVAT job when an annotator starts it: a webhook receiver (Starlette) in front of push_to_cvat's code.

CVAT posts `{"event": "update:job", "job": {...}, "before_update": {"state": ...}, ...}` to the
webhook's URL, signed with the webhook's secret: `X-Signature-256: sha256=<HMAC-SHA256 of the
body>`. A job whose `state` just became `in progress` is queued; one worker thread (the run is
loaded once) predicts the job's frames and adds the colonies as automatic polygons, exactly as
`push_to_cvat.py` does for those frames. Shapes people drew are never touched, and a job whose
frames already hold automatic shapes is left as it is (reopening a job does not duplicate them).
Unsigned or wrongly signed requests answer 401; the secret is never printed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.cli import UserError, scrub
from common.settings import Settings
from evaluate.cvat_function import ColonyDetector
from evaluate.cvat_push import ALREADY_ANNOTATED, PushOptions, detector_options, push_predictions

SIGNATURE_HEADER = "X-Signature-256"
IN_PROGRESS = "in progress"
LOG = logging.getLogger("reefseg.webhook")


def signature(secret: str, body: bytes) -> str:
    """The `X-Signature-256` value CVAT sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(signature(secret, body), str(header))


@dataclass(frozen=True)
class JobRequest:
    """A job to pre-annotate: its task and its frame numbers in the task."""

    job_id: int
    task_id: int
    frames: range


def job_to_annotate(payload: dict[str, Any]) -> JobRequest | None:
    """The job of an `update:job` event that moved it into `in progress`; None for every other event."""
    job = payload.get("job") if payload.get("event") == "update:job" else None
    before = payload.get("before_update") or {}
    if (
        not isinstance(job, dict)
        or job.get("state") != IN_PROGRESS
        or "state" not in before
        or before["state"] == IN_PROGRESS
    ):
        return None
    try:
        return JobRequest(
            int(job["id"]), int(job["task_id"]), range(int(job["start_frame"]), int(job["stop_frame"]) + 1)
        )
    except (KeyError, TypeError, ValueError):
        return None


class PreAnnotator:
    """The loaded run and one worker thread that annotates queued jobs in turn."""

    def __init__(self, settings: Settings, options: PushOptions) -> None:
        self.settings = settings
        self.options = options
        self.detector = ColonyDetector(detector_options(options))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pre-annotate")
        self._lock = threading.Lock()
        self.jobs: dict[int, Future] = {}

    def submit(self, job: JobRequest) -> Future:
        with self._lock:
            running = self.jobs.get(job.job_id)
            if running is not None and not running.done():
                return running  # CVAT may deliver the same event twice
            future = self._pool.submit(self.annotate, job)
            self.jobs[job.job_id] = future
            return future

    def annotate(self, job: JobRequest) -> dict[str, Any]:
        """Push the job's frames; the outcome is logged in one line, and returned for tests."""
        out = io.StringIO()
        options = replace(self.options, task_id=job.task_id, frames=job.frames, replace=False, dry_run=False, once=True)
        try:
            counts = push_predictions(self.settings, options, out, detector=self.detector)
        except UserError as error:
            message = scrub(str(error), self.settings.secrets)
            LOG.error("job %d (task %d): %s", job.job_id, job.task_id, message)
            return {"job": job.job_id, "error": message}
        if ALREADY_ANNOTATED in out.getvalue():
            LOG.info("job %d (task %d): its frames %s", job.job_id, job.task_id, ALREADY_ANNOTATED)
            return {"job": job.job_id, "colonies": {}, "skipped": True}
        LOG.info(
            "job %d (task %d): %d colonies on frames %d-%d",
            job.job_id,
            job.task_id,
            sum(counts.values()),
            job.frames.start,
            job.frames.stop - 1,
        )
        return {"job": job.job_id, "colonies": counts, "skipped": False}

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def create_app(settings: Settings, annotator: PreAnnotator) -> Any:
    """The Starlette app: `POST /webhook` (CVAT's deliveries), `GET /health`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    secret = settings.cvat_webhook_secret
    if not secret:
        raise UserError(
            "CVAT_WEBHOOK_SECRET is not set; set it to the secret of the webhook in CVAT (Project > Actions > Setup webhooks)"
        )

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        if not signature_ok(secret, body, request.headers.get(SIGNATURE_HEADER)):
            LOG.warning("refused a delivery without a valid %s", SIGNATURE_HEADER)
            return JSONResponse({"error": f"missing or wrong {SIGNATURE_HEADER}"}, status_code=401)
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"error": "the body is not a JSON object"}, status_code=400)
        if payload.get("event") == "ping":
            return JSONResponse({"ok": True})
        job = job_to_annotate(payload)
        if job is None:
            return JSONResponse({"ignored": str(payload.get("event", ""))})
        annotator.submit(job)
        LOG.info(
            "job %d (task %d) started: queued frames %d-%d",
            job.job_id,
            job.task_id,
            job.frames.start,
            job.frames.stop - 1,
        )
        return JSONResponse({"queued": job.job_id}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "run": Path(annotator.options.run_dir).name})

    return Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/health", health, methods=["GET"])])
