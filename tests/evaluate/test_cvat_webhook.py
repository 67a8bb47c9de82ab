"""The webhook service: CVAT-shaped, signed job events in, automatic polygons on the job's frames of the fake CVAT out."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
from cvat_server import FakeCvat, confidence_spec, polygon
from evaluate_world import World

from common.cli import UserError
from evaluate.colonies import find_colonies
from evaluate.cvat_push import PushOptions
from evaluate.cvat_webhook import SIGNATURE_HEADER, PreAnnotator, create_app, job_to_annotate, signature
from prepare.taxonomy import taxonomy_dirs

SECRET = "whsec-0123456789-reef"
pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")


@pytest.fixture(scope="module")
def annotator(world: World) -> PreAnnotator:
    dirs = tuple(taxonomy_dirs(world.settings.taxonomy_dirs))
    annotator = PreAnnotator(
        world.settings, PushOptions(run_dir=world.run_dir, task_id=0, precision="fp32", taxonomy_dirs=dirs)
    )
    yield annotator
    annotator.close()


def _job_event(
    job_id: int, task_id: int, start: int, stop: int, state: str = "in progress", before: str = "new"
) -> dict:
    """An `update:job` delivery as CVAT sends it (the job as the API serializes it; `before_update` holds the changed fields)."""
    return {
        "event": "update:job", "webhook_id": 3,
        "job": {"url": f"http://cvat/api/jobs/{job_id}", "id": job_id, "task_id": task_id, "project_id": 1, "stage": "annotation",
                "state": state, "status": "annotation", "start_frame": start, "stop_frame": stop, "frame_count": stop - start + 1,
                "mode": "annotation", "type": "annotation", "assignee": None, "dimension": "2d"},
        "before_update": {"state": before},
        "sender": {"url": "http://cvat/api/users/1", "id": 1, "username": "annotator", "first_name": "", "last_name": ""},
    }  # fmt: skip


def _post(client, payload: dict, secret: str | None = SECRET):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} | ({SIGNATURE_HEADER: signature(secret, body)} if secret else {})
    return client.post("/webhook", content=body, headers=headers)


def _setup(world: World) -> tuple[FakeCvat, int, dict[str, int]]:
    cvat = FakeCvat()
    project = cvat.add_project(
        "Reef", labels=[(name, [confidence_spec()]) for name in ("Acropora", "Porites", "Pocillopora")]
    )
    ids = {name: cvat.label_id(project, name) for name in ("Acropora", "Porites", "Pocillopora")}
    frames = [(path.name, path.read_bytes()) for path in sorted((world.root / "media").glob("Reef_*.png"))]
    manual = polygon(1, ids["Pocillopora"], [1, 1, 20, 1, 10, 15])
    return cvat, cvat.add_task(project, "Moorea", frames=frames, shapes=[manual]), ids


def test_a_job_going_in_progress_gets_its_frames_pre_annotated_once(
    world: World, annotator: PreAnnotator, caplog
) -> None:
    from starlette.testclient import TestClient

    cvat, task, ids = _setup(world)
    with cvat.serve():
        settings = replace(
            world.settings,
            cvat_url=cvat.url,
            cvat_username=cvat.username,
            cvat_password=cvat.password,
            cvat_webhook_secret=SECRET,
        )
        annotator.settings = settings
        client = TestClient(create_app(settings, annotator))
        assert _post(client, {"event": "ping", "webhook_id": 3}).json() == {"ok": True}
        with caplog.at_level(logging.INFO, logger="reefseg.webhook"):
            answer = _post(client, _job_event(7, task, 1, 2))
            assert answer.status_code == 202 and answer.json() == {"queued": 7}
            outcome = annotator.jobs[7].result(timeout=300)
            again = _post(client, _job_event(7, task, 1, 2))  # reopened: the frames already hold automatic shapes
            assert again.status_code == 202 and annotator.jobs[7].result(timeout=300)["skipped"]
        shapes = cvat.annotations[task]["shapes"]
    expected = {
        frame: find_colonies(world.model_masks[frame], np.ones(world.model_masks[frame].shape, dtype=np.float32))
        for frame in (1, 2)
    }
    auto = [s for s in shapes if s["source"] == "auto"]
    assert sorted({s["frame"] for s in auto}) == [1, 2]  # frame 0 belongs to another job
    assert len(auto) == sum(len(c) for c in expected.values()) == sum(outcome["colonies"].values())
    assert {s["type"] for s in auto} == {"polygon"} and all(len(s["attributes"]) == 1 for s in auto)
    assert [s for s in shapes if s["source"] == "manual"] == [
        {**polygon(1, ids["Pocillopora"], [1, 1, 20, 1, 10, 15]), "id": 1}
    ]
    assert "job 7 (task 1)" in caplog.text and "already hold automatic shapes" in caplog.text
    assert SECRET not in caplog.text and cvat.password not in caplog.text


def test_unsigned_or_other_events_start_nothing(world: World, annotator: PreAnnotator) -> None:
    from starlette.testclient import TestClient

    settings = replace(world.settings, cvat_webhook_secret=SECRET)
    client = TestClient(create_app(settings, annotator))
    before = dict(annotator.jobs)
    assert _post(client, _job_event(8, 1, 0, 0), secret=None).status_code == 401
    assert _post(client, _job_event(8, 1, 0, 0), secret="another secret").status_code == 401
    assert SECRET not in _post(client, _job_event(8, 1, 0, 0), secret="x").text
    assert _post(client, _job_event(8, 1, 0, 0, state="completed", before="in progress")).json() == {
        "ignored": "update:job"
    }
    assert _post(client, {"event": "create:task", "task": {"id": 1}}).json() == {"ignored": "create:task"}
    body = b"not json"
    assert client.post("/webhook", content=body, headers={SIGNATURE_HEADER: signature(SECRET, body)}).status_code == 400
    assert annotator.jobs == before
    assert job_to_annotate(_job_event(8, 1, 0, 3, before="in progress")) is None  # no state change
    assert (
        job_to_annotate({**_job_event(8, 1, 0, 3), "before_update": {"assignee": None}}) is None
    )  # another field changed
    assert job_to_annotate(_job_event(8, 1, 0, 3)).frames == range(0, 4)


def test_no_secret_is_refused(world: World, annotator: PreAnnotator) -> None:
    with pytest.raises(UserError, match="CVAT_WEBHOOK_SECRET is not set"):
        create_app(replace(world.settings, cvat_webhook_secret=""), annotator)


def test_a_task_lacking_a_label_is_logged_not_crashed(world: World, annotator: PreAnnotator, caplog) -> None:
    cvat = FakeCvat()
    project = cvat.add_project("Reef", labels=[("Acropora", [])])
    task = cvat.add_task(
        project, "Moorea", frames=[(p.name, p.read_bytes()) for p in sorted((world.root / "media").glob("Reef_*.png"))]
    )
    with cvat.serve(), caplog.at_level(logging.ERROR, logger="reefseg.webhook"):
        annotator.settings = replace(
            world.settings, cvat_url=cvat.url, cvat_username=cvat.username, cvat_password=cvat.password
        )
        outcome = annotator.submit(job_to_annotate(_job_event(9, task, 0, 0))).result(timeout=300)
    assert "no label for the run's classes Porites" in outcome["error"] and "job 9" in caplog.text
    assert cvat.annotations[task]["shapes"] == []


def test_the_service_command_refuses_to_start_without_a_secret(world: World, monkeypatch) -> None:
    from evaluate.cli import webhook_service

    monkeypatch.delenv("CVAT_WEBHOOK_SECRET", raising=False)
    with pytest.raises(UserError, match="CVAT_WEBHOOK_SECRET is not set"):
        webhook_service(str(world.run_dir))
    with pytest.raises(UserError, match="--port must be a port number"):
        webhook_service(str(world.run_dir), port=70000)
