"""The live pull end to end: real cvat-sdk -> local fake CVAT (tests/cvat_server.py) -> FiftyOne."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
from cvat_sdk.masks import encode_mask
from cvat_server import FakeCvat, ReefProject, add_reef_project, mask, png_bytes, polygon, track, tracked
from PIL import Image

from common.cli import UserError
from common.settings import REPO_ROOT, load_settings
from data_engineering import dataset_contract as contract
from data_engineering.pull import main, pull_project
from data_engineering.shapes import TOO_FEW_POINTS, parse_confidence
from prepare.rasterize import Shape, polygon_from_rings, rasterize_shapes, to_pixels

# isort: split
import fiftyone as fo
from fiftyone import ViewField as F


@pytest.fixture(params=["2.29.0", "2.80.0"])
def cvat(request) -> Iterator[FakeCvat]:
    """An older and a current CVAT holding the standard reef project, served on a free port."""
    server = FakeCvat(version=request.param)
    server.reef = add_reef_project(server)
    with server.serve():
        yield server


@pytest.fixture
def env(cvat: FakeCvat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings pointing at the fake server with a password login; returns the media folder."""
    monkeypatch.setenv("CVAT_URL", cvat.url)
    monkeypatch.setenv("CVAT_USERNAME", cvat.username)
    monkeypatch.setenv("CVAT_PASSWORD", cvat.password)
    monkeypatch.setenv("MEDIA_DIR", str(tmp_path / "media"))
    return tmp_path / "media"


def task_samples(dataset: fo.Dataset, task_id: int) -> fo.DatasetView:
    return dataset.match(F(contract.CVAT_TASK_ID) == task_id)


def test_pull_builds_the_dataset(cvat: FakeCvat, env: Path, dataset_name: str, capsys: pytest.CaptureFixture[str]):
    reef: ReefProject = cvat.reef
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    dataset = fo.load_dataset(dataset_name)

    assert len(dataset) == 5 and summary.tasks == 3 and summary.images == 5
    assert dataset.distinct(contract.CVAT_TASK_ID) == [
        reef.train_task,
        reef.val_task,
        reef.test_task,
    ]  # the open task is not pulled
    assert dataset.count_sample_tags() == {"train": 2, "val": 2, "test": 1}
    assert dict(summary.skipped) == {"rectangle": 1, TOO_FEW_POINTS: 1} and summary.clipped == 1
    assert summary.polygons == {"Acropora": 4, "Porites": 2}

    sample = dataset.match(F("filepath").ends_with(f"task_{reef.train_task}/Moorea_2021_03.jpg")).first()
    assert (sample[contract.SITE], sample[contract.YEAR], sample[contract.QUADRAT_ID]) == ("Moorea", "2021", "03")
    assert (sample[contract.CVAT_PROJECT_NAME], sample[contract.CVAT_TASK_NAME], sample[contract.CVAT_SUBSET]) == (
        "Reef 2021",
        "Moorea transect A",
        "Train",
    )
    assert (sample.metadata.width, sample.metadata.height) == (64, 48)
    polygon, outline = sorted(sample[contract.GT_FIELD].polylines, key=lambda p: -p[contract.Z_ORDER])
    assert polygon.points == [
        [[1.5 / 64, 2.25 / 48], [30.5 / 64, 2.25 / 48], [30.5 / 64, 20.75 / 48]]
    ]  # sub-pixel, normalized
    assert (polygon.label, polygon[contract.Z_ORDER], polygon.closed, polygon.filled) == ("Acropora", 2, True, True)
    assert polygon.confidence == parse_confidence("80")
    assert (outline.label, outline[contract.Z_ORDER], outline["growth_form"], len(outline.points[0])) == (
        "Acropora",
        1,
        "massive",
        5,
    )

    clipped = dataset.match(F("filepath").ends_with("Moorea_2021_04.jpg")).first()[contract.GT_FIELD].polylines[0]
    assert clipped.points[0][0] == [0.0, 2 / 30] and clipped[contract.OCCLUDED] is True

    unnamed = dataset.match(F("filepath").ends_with("IMG_0001.png")).first()
    assert (unnamed[contract.SITE], unnamed[contract.YEAR], unnamed[contract.QUADRAT_ID]) == (None, None, None)
    media = env / dataset.info[contract.INFO_MEDIA_FOLDER]  # the dataset's own folder, named after it
    assert media.name.startswith(f"{dataset_name}-")
    assert unnamed.filepath == str(media / f"task_{reef.val_task}" / "photos" / "IMG_0001.png")

    # Two tasks hold Moorea_2021_03.jpg: each keeps its own file, byte for byte.
    first = media / f"task_{reef.train_task}" / "Moorea_2021_03.jpg"
    second = media / f"task_{reef.val_task}" / "Moorea_2021_03.jpg"
    assert (
        first.read_bytes() == cvat.frames[reef.train_task][0][1]
        and second.read_bytes() == cvat.frames[reef.val_task][0][1]
    )
    assert not list(env.rglob("*.part*"))
    assert f"CVAT {cvat.version} at {cvat.url}" in capsys.readouterr().out


def test_incremental_pull_only_takes_changed_tasks_and_replaces_their_samples(
    cvat: FakeCvat, env: Path, dataset_name: str
):
    reef: ReefProject = cvat.reef
    pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    dataset = fo.load_dataset(dataset_name)
    kept_ids = set(task_samples(dataset, reef.train_task).values("id"))
    frames_before = cvat.frame_requests()

    unchanged = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    assert (unchanged.tasks, unchanged.tasks_unchanged) == (0, 3)

    cvat.annotations[reef.val_task]["shapes"].pop()  # an annotator deletes the Acropora on IMG_0001.png
    cvat.touch_task(reef.val_task)
    annotation_reads = sum(r.path.endswith("/annotations") for r in cvat.requests)
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)

    dataset.reload()
    assert (summary.tasks, summary.tasks_unchanged) == (1, 2)
    assert [r.path for r in cvat.requests if r.path.endswith("/annotations")][annotation_reads:] == [
        f"/api/tasks/{reef.val_task}/annotations"
    ]
    assert cvat.frame_requests() == frames_before  # its frames were on disk already
    assert len(dataset) == 5 and len(task_samples(dataset, reef.val_task)) == 2
    assert task_samples(dataset, reef.val_task).count(f"{contract.GT_FIELD}.polylines") == 1
    assert set(task_samples(dataset, reef.train_task).values("id")) == kept_ids  # untouched tasks keep their samples
    assert dataset.info[contract.INFO_CVAT_TASKS][str(reef.val_task)] == cvat.tasks[reef.val_task][
        "updated_date"
    ].replace("Z", "+00:00")


def test_refresh_reimports_everything_without_duplicates(cvat: FakeCvat, env: Path, dataset_name: str):
    pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    frames_before = cvat.frame_requests()
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name, refresh=True)
    assert (summary.tasks, summary.tasks_unchanged) == (3, 0)
    assert len(fo.load_dataset(dataset_name)) == 5
    assert cvat.frame_requests() == frames_before


def test_status_all_takes_the_open_task_without_a_split(cvat: FakeCvat, env: Path, dataset_name: str):
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name, status="all")
    dataset = fo.load_dataset(dataset_name)
    assert len(dataset) == 5 + 1 + 8 and summary.splits[""] == 1 + 8
    assert task_samples(dataset, cvat.reef.open_task).first().tags == []


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run pull_from_cvat's entry point in-process; returns exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["pull_from_cvat.py", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_interrupted_pull_resumes_without_downloading_finished_frames(
    cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    cvat.fail(
        r"/api/tasks/\d+/data", status=500, skip=3
    )  # the 4th frame download fails: tasks 1 done, task 2 half done
    code, _, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert (
        code == 2
        and f"of task {cvat.reef.val_task}; try again later (a rerun resumes)" in err
        and cvat.password not in err
    )
    assert len(fo.load_dataset(dataset_name)) == 2  # the finished task is in; the half-done one is not

    code, out, _ = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert code == 0 and "tasks imported" in out
    assert len(fo.load_dataset(dataset_name)) == 5
    assert cvat.frame_requests() == 5 + 1  # every frame fetched once, plus the one that failed
    assert not list(env.rglob("*.part*"))


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
@pytest.mark.parametrize("bad_name", ["../../escape.jpg", "/tmp/escape.jpg"])
def test_file_names_escaping_the_media_folder_are_refused(
    bad_name: str, cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    _, data, width, height = cvat.frames[cvat.reef.test_task][0]
    cvat.frames[cvat.reef.test_task][0] = (bad_name, data, width, height)
    code, out, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and f"{bad_name!r} would be written outside the media folder" in err
    assert f"task {cvat.reef.test_task} ('Tahiti')" in err
    assert not list(env.parent.rglob("escape.jpg")) and not list(env.rglob("*.jpg"))  # checked before any download
    assert cvat.frame_requests() == 0


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_a_dataset_made_by_something_else_is_kept_unless_overwrite(
    cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    fo.Dataset(dataset_name, persistent=True).add_sample(fo.Sample(filepath="/data/someone_elses.jpg"))
    code, _, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert code == 2 and "was not made by reefseg" in err and len(fo.load_dataset(dataset_name)) == 1
    code, _, _ = run_cli(["Reef 2021", "--dataset-name", dataset_name, "--overwrite"], monkeypatch, capsys)
    assert code == 0 and len(fo.load_dataset(dataset_name)) == 5


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_tasks_no_longer_listed_keep_their_samples(cvat: FakeCvat, env: Path, dataset_name: str, capsys):
    pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    cvat.touch_task(cvat.reef.train_task, status="annotation")  # reopened for corrections
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    assert (summary.tasks, summary.tasks_unchanged) == (0, 2)
    assert len(fo.load_dataset(dataset_name)) == 5
    assert "1 task(s) in dataset" in capsys.readouterr().out


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
@pytest.mark.parametrize(
    "case", ["wrong URL", "wrong password", "wrong token", "server error", "missing project", "bad status"]
)
def test_cli_errors_are_one_line_exit_2_and_never_show_secrets(
    case, cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    project = "Reef 2021"
    args = []
    if case == "wrong URL":
        monkeypatch.setenv("CVAT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    elif case == "wrong password":
        monkeypatch.setenv("CVAT_PASSWORD", "Not-The-Passw0rd")
    elif case == "wrong token":
        monkeypatch.setenv("CVAT_ACCESS_TOKEN", "pat-wrong-token-value")
    elif case == "server error":
        cvat.fail("/api/tasks", status=500)
    elif case == "missing project":
        project = "Reef 1999"
    else:
        args = ["--status", "done"]
    code, out, err = run_cli([project, "--dataset-name", dataset_name, *args], monkeypatch, capsys)
    expected = {
        "wrong URL": "cannot reach CVAT at http://127.0.0.1:9 (Connection refused)",
        "wrong password": "refused the login with user 'annotator'",
        "wrong token": "refused the login with the access token",
        "server error": "answered HTTP 500 while listing the tasks",
        "missing project": "no project named 'Reef 1999'; projects there: 'Reef 2021', 'Seagrass survey'",
        "bad status": "is not one of annotation, validation, completed",
    }[case]
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and expected in err
    for secret in (cvat.password, "Not-The-Passw0rd", "pat-wrong-token-value", cvat.access_token):
        assert secret not in out + err
    assert not fo.dataset_exists(dataset_name)  # every one of these stops before the dataset is touched


def test_script_runs_as_a_subprocess(tmp_path: Path):
    cvat = FakeCvat()
    add_reef_project(cvat)
    env = {
        **os.environ,
        "CVAT_URL": "",
        "CVAT_USERNAME": cvat.username,
        "CVAT_PASSWORD": "Wrong-But-Secret-1",
        "MEDIA_DIR": str(tmp_path),
    }
    with cvat.serve() as url:
        env["CVAT_URL"] = url
        result = subprocess.run(
            [sys.executable, "data_engineering/pull_from_cvat.py", "Reef 2021"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: CVAT at {url} refused the login with user 'annotator' and the password in CVAT_PASSWORD; check them"
    )
    assert "Wrong-But-Secret-1" not in result.stdout + result.stderr


def _png_with_broken_checksum() -> bytes:
    """A PNG whose pixel data fails its CRC: PIL's verify raises SyntaxError for it, not OSError."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT")
    data[start + 4 + int.from_bytes(data[start - 4 : start], "big")] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize(
    "payload", [b"<html>proxy error</html>", _png_with_broken_checksum()], ids=["html", "broken-png"]
)
@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_an_unreadable_frame_is_skipped_and_reported(cvat: FakeCvat, env: Path, dataset_name: str, payload: bytes):
    name, _, width, height = cvat.frames[cvat.reef.test_task][0]
    cvat.frames[cvat.reef.test_task][0] = (name, payload, width, height)
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    [skipped] = summary.images_skipped
    assert skipped.startswith(f"task {cvat.reef.test_task}/{name}: CVAT sent a file that is not a whole image: ")
    assert len(fo.load_dataset(dataset_name)) == 4 and not list(env.rglob(name))
    assert "images skipped (unreadable)" in summary.format()


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_project_names_fire_would_misread(cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys):
    cvat.add_project("2021", labels=[("Acropora", [])])
    code, out, err = run_cli(["2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert (
        code == 2 and "project '2021', 0 task(s)" in out and "project '2021' has no tasks yet" in err
    )  # read as a name, not 2021.0
    code, _, err = run_cli(
        ["Reef, 2021", "--dataset-name", dataset_name], monkeypatch, capsys
    )  # text as typed, not a tuple
    assert code == 2 and "no project named 'Reef, 2021'" in err


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_two_datasets_pulled_from_one_project_never_share_media(cvat: FakeCvat, env: Path, dataset_name: str):
    other = f"{dataset_name}_copy"
    pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    pull_project(load_settings(), "Reef 2021", dataset_name=other)
    first, second = (set(fo.load_dataset(name).values("filepath")) for name in (dataset_name, other))
    assert len(first) == len(second) == 5 and not first & second
    assert {Path(p).relative_to(env).parts[0] for p in first | second} == {
        fo.load_dataset(name).info[contract.INFO_MEDIA_FOLDER] for name in (dataset_name, other)
    }
    fo.delete_dataset(other)


@pytest.mark.parametrize("case", ["truncated", "size", "long name"])
@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_frames_that_cannot_be_used_are_skipped_with_the_reason(
    case: str, cvat: FakeCvat, env: Path, dataset_name: str
):
    name, data, width, height = cvat.frames[cvat.reef.test_task][0]
    if case == "truncated":
        data = data[: len(data) * 2 // 3]
    elif case == "size":
        data = png_bytes(width // 2, height)
    else:
        name = "é" * 126 + ".jpg"
    cvat.frames[cvat.reef.test_task][0] = (name, data, width, height)
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    expected = {
        "truncated": "CVAT sent a file that is not a whole image: it does not decode completely",
        "size": f"CVAT lists it as {width}x{height} but sent a {width // 2}x{height} image",
        "long name": "its file name has a part of 256 bytes, longer than the 255 a file system allows",
    }[case]
    [skipped] = summary.images_skipped
    assert skipped.startswith(f"task {cvat.reef.test_task}/{name}: ") and expected in skipped
    assert len(fo.load_dataset(dataset_name)) == 4 and len([p for p in env.rglob("*") if p.is_file()]) == 4


@pytest.mark.parametrize("case", ["nan", "odd"])
@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_polygons_with_nan_or_odd_coordinates_stop_the_pull_naming_the_shape(
    case: str, cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    shape = next(s for s in cvat.annotations[cvat.reef.test_task]["shapes"] if s["type"] == "polygon")
    shape["points"] = (
        [1.0, 1.0, 20.0, float("nan"), 20.0, 20.0] if case == "nan" else [1.0, 1.0, 20.0, 1.0, 20.0, 20.0, 5.0]
    )
    code, _, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    expected = "coordinates that are not finite numbers" if case == "nan" else "an odd number of coordinates (7)"
    last = err.strip().splitlines()[-1]  # the lines before it are the progress bar's
    assert code == 2 and last.startswith("error: ") and "Traceback" not in err
    assert f"polygon #{shape['id']} (label " in last and f"task {cvat.reef.test_task}, " in last and expected in last
    assert cvat.reef.test_task not in fo.load_dataset(dataset_name).distinct(contract.CVAT_TASK_ID)


HTML = b"<html><body><h1>Sign in to the campus proxy</h1></body></html>"
ABOUT = {
    "name": "Computer Vision Annotation Tool",
    "description": "CVAT",
    "logo_url": "/logo",
    "subtitle": "Open Data Annotation Platform",
}
GARBAGE = {  # (path, method, status, body, content type) answered instead of CVAT's own
    "about is an HTML page": ("/api/server/about", "GET", 200, HTML, "text/html"),
    "about is empty JSON": ("/api/server/about", "GET", 200, b"{}", "application/json"),
    "about has no version": ("/api/server/about", "GET", 200, json.dumps(ABOUT).encode(), "application/json"),
    "about has a version that is not one": (
        "/api/server/about",
        "GET",
        200,
        json.dumps({**ABOUT, "version": "banana"}).encode(),
        "application/json",
    ),
    "about is a list": ("/api/server/about", "GET", 200, b"[1, 2]", "application/json"),
    "login answers HTML": ("/api/auth/login", "POST", 200, HTML, "text/html"),
    "projects are cut off": (
        "/api/projects",
        "GET",
        200,
        b'{"count": 1, "results": [{"id": 1, "na',
        "application/json",
    ),
    "labels lack names": (
        "/api/labels",
        "GET",
        200,
        b'{"count": 1, "next": null, "previous": null, "results": [{"id": 3}]}',
        "application/json",
    ),
    "image list is HTML": (r"/api/tasks/\d+/data/meta", "GET", 200, HTML, "text/html"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_a_server_answering_garbage_is_one_sentence_without_secrets(
    case: str, cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    path, method, status, body, content_type = GARBAGE[case]
    cvat.fail(path, status=status, method=method, times=100, body=body, content_type=content_type)
    code, out, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and last.startswith(f"error: CVAT at {cvat.url} sent an ")
    assert "check that CVAT_URL is the CVAT server itself" in last
    secret_forms = [
        cvat.password,
        quote(cvat.password, safe=""),
        quote_plus(cvat.password),
        repr(cvat.password)[1:-1],
        base64.b64encode(cvat.password.encode()).decode(),
        base64.b64encode(f"{cvat.username}:{cvat.password}".encode()).decode(),
    ]
    for form in secret_forms:
        assert form not in out + err


def _colony_bitmap(width: int, height: int) -> np.ndarray:
    """A brush-drawn colony touching the image's left and bottom borders, with a hole."""
    bitmap = np.zeros((height, width), dtype=bool)
    bitmap[20:, :30] = True
    bitmap[30:40, 10:20] = False
    return bitmap


def _drawn(polyline: fo.Polyline, width: int, height: int) -> np.ndarray:
    geometry = polygon_from_rings([to_pixels(ring, width, height) for ring in polyline.points])
    return rasterize_shapes([Shape(geometry, 1)], width, height).astype(bool)


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_masks_and_track_keyframes_become_colonies_of_their_frames(cvat: FakeCvat, env: Path, dataset_name: str):
    reef: ReefProject = cvat.reef
    bitmap = _colony_bitmap(48, 48)
    frames = [(f"Bora_2023_{i:02d}.jpg", png_bytes(48, 48, fmt="JPEG")) for i in range(3)]
    task = cvat.add_task(
        reef.project,
        "Bora brush",
        subset="Train",
        status="completed",
        frames=frames,
        segment_size=2,
        shapes=[
            mask(0, reef.porites, bitmap, z_order=1),
        ],
        tracks=[
            track(
                reef.acropora,
                [
                    tracked(0, [2, 2, 12, 2, 7, 10]),
                    tracked(1, [2, 2, 12, 2, 7, 10], outside=True),
                    tracked(2, [20, 20, 40, 20, 30, 40]),
                ],
            ),
            track(reef.porites, [tracked(1, encode_mask(bitmap), shape_type="mask")]),
        ],
    )
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    samples = task_samples(fo.load_dataset(dataset_name), task).sort_by("filepath")
    per_frame = [[(p.label, len(p.points)) for p in s[contract.GT_FIELD].polylines] for s in samples]
    assert per_frame == [
        [("Porites", 2), ("Acropora", 1)],
        [("Porites", 2)],
        [("Acropora", 1)],
    ]  # frame 1's outside keyframe left out
    first = samples.first()[contract.GT_FIELD].polylines
    assert (_drawn(first[0], 48, 48) == bitmap).all() and first[0][contract.Z_ORDER] == 1
    assert summary.track_shapes == 3 and summary.polygons["Porites"] == 1 + 2 + 1 and not summary.skipped.get("mask")


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_a_video_task_is_refused_by_name_before_anything_is_written(
    cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    video = cvat.add_video_task(cvat.reef.project, "Dive 3", "dive_03.mp4", [png_bytes(32, 24)] * 4, status="completed")
    code, _, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"task {video} ('Dive 3') was made from a video" in err
    assert not fo.dataset_exists(dataset_name) and cvat.frame_requests() == 0 and not env.exists()


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_a_task_whose_meta_lists_one_video_frame_is_refused_too(cvat: FakeCvat, env: Path, dataset_name: str):
    video = cvat.add_video_task(cvat.reef.project, "Dive 4", "dive_04.mp4", [png_bytes(32, 24)] * 4, status="completed")
    cvat.tasks[video].update(mode="annotation", data_original_chunk_type="imageset")  # only data/meta tells
    with pytest.raises(UserError, match=rf"task {video} \('Dive 4'\) was made from a video"):
        pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    assert not fo.dataset_exists(dataset_name) and cvat.frame_requests() == 0


def test_deleted_frames_are_skipped_and_counted(cvat: FakeCvat, env: Path, dataset_name: str):
    cvat.deleted_frames[cvat.reef.train_task] = [1]
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    assert summary.frames_deleted == 1 and summary.images == 4 and len(fo.load_dataset(dataset_name)) == 4
    assert "frames deleted in CVAT (skipped)" in summary.format()
    assert not list(env.rglob("Moorea_2021_04.jpg"))  # never downloaded


@pytest.mark.parametrize("layout_route", [True, False])
def test_honeypot_frames_are_not_imported_twice(cvat: FakeCvat, env: Path, dataset_name: str, layout_route: bool):
    reef: ReefProject = cvat.reef
    frames = [(f"Huahine_2024_{i:02d}.jpg", png_bytes(24, 24, (i * 50, 90, 90))) for i in range(5)]
    shapes = [polygon(1, reef.acropora, [1, 1, 20, 1, 10, 20]), polygon(3, reef.porites, [2, 2, 22, 2, 12, 22])]
    pool = cvat.add_task(
        reef.project,
        "Huahine with honeypots",
        status="completed",
        frames=frames,
        shapes=shapes,
        segment_size=2,
        honeypots={1: 4},
        gt_shapes=[polygon(4, reef.porites, [3, 3, 20, 3, 12, 20])],
    )
    if (
        not layout_route
    ):  # a server without /validation_layout (2.29 also leaves validation_mode out): the repeated name tells
        cvat.fail(rf"/api/tasks/{pool}/validation_layout", status=404)
    summary = pull_project(load_settings(), "Reef 2021", dataset_name=dataset_name)
    samples = task_samples(fo.load_dataset(dataset_name), pool)
    names = sorted(Path(p).name for p in samples.values("filepath"))
    assert names == ["Huahine_2024_00.jpg", "Huahine_2024_02.jpg", "Huahine_2024_03.jpg", "Huahine_2024_04.jpg"]
    assert summary.honeypot_frames == 1
    real = samples.match(F("filepath").ends_with("Huahine_2024_04.jpg")).first()
    assert [p.label for p in real[contract.GT_FIELD].polylines] == ["Porites"]  # the pool frame's ground truth, once


@pytest.mark.parametrize("cvat", ["2.80.0"], indirect=True)
def test_no_completed_task_says_what_there_is_and_leaves_no_dataset(
    cvat: FakeCvat, env: Path, dataset_name: str, monkeypatch, capsys
):
    for task in (cvat.reef.train_task, cvat.reef.val_task, cvat.reef.test_task):
        cvat.touch_task(task, status="validation")
    code, _, err = run_cli(["Reef 2021", "--dataset-name", dataset_name], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "project 'Reef 2021' has no task with status completed (its 12 tasks: 5 annotation, 7 validation)" in err
    assert "pass --status annotation,validation (or --status all)" in err
    assert not fo.dataset_exists(dataset_name) and cvat.frame_requests() == 0
