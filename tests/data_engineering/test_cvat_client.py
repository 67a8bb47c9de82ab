"""The CVAT adapter through the real cvat-sdk against the local fake server (tests/cvat_server.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from cvat_server import FakeCvat, add_reef_project, png_bytes

from common.cli import UserError
from common.settings import load_settings
from data_engineering.cvat_client import connect, display_url, parse_statuses


@pytest.fixture(params=["2.29.0", "2.80.0"])
def served(request) -> Iterator[tuple[FakeCvat, object]]:
    """An older and a current CVAT, each holding the standard reef project."""
    cvat = FakeCvat(version=request.param)
    reef = add_reef_project(cvat)
    with cvat.serve():
        yield cvat, reef


def password_settings(cvat: FakeCvat, **changes):
    return load_settings(cvat_url=cvat.url, cvat_username=cvat.username, cvat_password=cvat.password, **changes)


def test_reads_project_tasks_labels_frames_and_shapes(served):
    cvat, reef = served
    with connect(password_settings(cvat)) as client:
        assert client.server_version == cvat.version
        project = client.find_project("Reef 2021")
        tasks = client.tasks(project, {"completed"})
        labels = client.labels(project)
        frames = client.frames(tasks[0])
        shapes, tracked = client.shapes(tasks[0], labels)
        data = client.frame_bytes(tasks[1], 0)
    assert [t.id for t in tasks] == [reef.train_task, reef.val_task, reef.test_task]
    assert [t.subset for t in tasks] == ["Train", "Validation", "Test"]
    assert all(t.updated_date.endswith("+00:00") for t in tasks)
    assert labels[reef.acropora].name == "Acropora"
    assert sorted(labels[reef.acropora].attributes.values()) == ["confidence", "growth_form"]
    assert [(f.name, f.width, f.height) for f in frames] == [
        ("Moorea_2021_03.jpg", 64, 48),
        ("Moorea_2021_04.jpg", 40, 30),
    ]
    first = shapes[0][0]
    assert (first.type, first.label, first.z_order, first.attributes) == (
        "polygon",
        "Acropora",
        2,
        {"confidence": "80"},
    )
    assert list(first.points) == [1.5, 2.25, 30.5, 2.25, 30.5, 20.75]
    assert shapes[0][1].attributes == {"growth_form": "massive"} and shapes[1][0].occluded
    assert not tracked
    assert data == cvat.frames[reef.val_task][0][1]
    # CVAT's pages of 10: the project's 12 tasks take two requests, so the SDK really walked the pages; its 4 labels one.
    assert sum(r.path == "/api/tasks" for r in cvat.requests) == 2
    assert sum(r.path == "/api/labels" for r in cvat.requests) == 1
    # The password travels in the login request's body and nowhere else.
    carrying = [r.path for r in cvat.requests if cvat.password in f"{r.path}{r.query}{r.headers}{r.body!r}"]
    assert carrying == ["/api/auth/login"]


def test_deleted_frames_are_left_out(served):
    cvat, reef = served
    cvat.deleted_frames[reef.train_task] = [0]
    with connect(password_settings(cvat)) as client:
        tasks = client.tasks(client.find_project("Reef 2021"), {"completed"})
        assert [(f.number, f.name) for f in client.frames(tasks[0])] == [(1, "Moorea_2021_04.jpg")]


def test_access_token_is_sent_as_bearer_without_a_login(served):
    cvat, _ = served
    settings = load_settings(cvat_url=cvat.url, cvat_access_token=cvat.access_token)
    if cvat.version == "2.29.0":
        with pytest.raises(
            UserError,
            match=r"CVAT 2\.29\.0 at .* has no personal access tokens .* set CVAT_USERNAME and CVAT_PASSWORD$",
        ):
            with connect(settings):
                pass
        assert [r.path for r in cvat.requests] == ["/api/server/about"]  # refused before sending the token anywhere
        return
    with connect(settings) as client:
        assert client.tasks(client.find_project("Reef 2021"), parse_statuses("all"))
    assert not any(r.path == "/api/auth/login" for r in cvat.requests)
    authorized = [r for r in cvat.requests if r.path != "/api/server/about"]
    assert authorized and all(r.headers.get("authorization") == f"Bearer {cvat.access_token}" for r in authorized)


def test_missing_project_lists_the_existing_ones(served):
    cvat, _ = served
    with connect(password_settings(cvat)) as client, pytest.raises(UserError) as error:
        client.find_project("Reef 2022")
    assert "no project named 'Reef 2022'" in str(error.value)
    assert "'Reef 2021'" in str(error.value) and "'Seagrass survey'" in str(error.value)


def test_organization_header_is_sent(served):
    cvat, _ = served
    with connect(password_settings(cvat, cvat_organization="reef-lab")) as client:
        client.find_project("Reef 2021")
    assert cvat.requests[-1].headers.get("x-organization") == "reef-lab"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "case", ["wrong password", "wrong token", "no credentials", "closed port", "server error", "not a URL"]
)
def test_failures_are_one_sentence_without_secrets(case):
    cvat = FakeCvat()
    add_reef_project(cvat)
    with cvat.serve() as url:
        settings = {
            "wrong password": dict(cvat_url=url, cvat_username=cvat.username, cvat_password="Wrong-Passw0rd!"),
            "wrong token": dict(cvat_url=url, cvat_access_token="pat-not-the-right-one"),
            "no credentials": dict(cvat_url=url),
            "closed port": dict(
                cvat_url=f"http://127.0.0.1:{closed_port()}", cvat_username="u", cvat_password=cvat.password
            ),
            "server error": dict(cvat_url=url, cvat_username=cvat.username, cvat_password=cvat.password),
            "not a URL": dict(
                cvat_url="ftp://user:Secret-In-Url@cvat.example", cvat_username="u", cvat_password=cvat.password
            ),
        }[case]
        if case == "server error":
            cvat.fail("/api/auth/login", status=500, method="POST")
        with pytest.raises(UserError) as error:
            with connect(load_settings(**settings)):
                pass
    message = str(error.value)
    expected = {
        "wrong password": "refused the login with user 'annotator'",
        "wrong token": "refused the login with the access token",
        "no credentials": "no CVAT credentials",
        "closed port": "cannot reach CVAT",
        "server error": "answered HTTP 500 while logging in",
        "not a URL": "is not an http:// or https:// address",
    }[case]
    assert expected in message
    assert "\n" not in message
    for secret in (cvat.password, "Wrong-Passw0rd!", "pat-not-the-right-one", "Secret-In-Url"):
        assert secret not in message


def test_display_url_drops_credentials():
    assert display_url("https://bob:hunter2@cvat.example:8443/path") == "https://cvat.example:8443/path"


def test_parse_statuses():
    assert parse_statuses("completed") == {"completed"}
    assert parse_statuses("Annotation, validation") == {"annotation", "validation"}
    assert parse_statuses("all") == {"annotation", "validation", "completed"}
    with pytest.raises(UserError, match="not one of"):
        parse_statuses("done")


def test_frame_bytes_are_the_original_file():
    cvat = FakeCvat()
    project = cvat.add_project("P", labels=[("Acropora", [])])
    original = png_bytes(17, 9, (1, 2, 3))
    cvat.add_task(project, "t", frames=[("a.png", original)], status="completed")
    with cvat.serve(), connect(password_settings(cvat)) as client:
        task = client.tasks(client.find_project("P"), {"completed"})[0]
        assert client.frame_bytes(task, 0) == original
    [request] = [r for r in cvat.requests if r.path.endswith("/data")]
    assert request.query == {"quality": "original", "type": "frame", "number": "0"}
