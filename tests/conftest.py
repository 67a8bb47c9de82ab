"""Test isolation: a private FiftyOne database, no developer .env, no telemetry, no network.

These variables must be set before anything imports fiftyone, hence at the top of conftest.
The database is a mongod of the tests' own on a free port (reached through FIFTYONE_DATABASE_URI,
which subprocesses inherit): FiftyOne's bundled service would otherwise join a database service
that another FiftyOne process on the machine already runs, and write test datasets into it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from mongod_server import find_mongod, start_mongod, stop_mongod

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="reefseg-tests-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)  # registered first, so it runs after mongod stops
os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_TMP / "fiftyone-db")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
os.environ.pop("FIFTYONE_DATABASE_URI", None)
_MONGOD = find_mongod()
if _MONGOD:
    _process, os.environ["FIFTYONE_DATABASE_URI"] = start_mongod(_MONGOD, _SESSION_TMP / "mongod")
    atexit.register(stop_mongod, _process)
os.environ["REEFSEG_ENV_FILE"] = str(_SESSION_TMP / "no.env")  # the developer's .env never leaks in
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
for _key in (
    "CVAT_URL",
    "CVAT_USERNAME",
    "CVAT_PASSWORD",
    "CVAT_ACCESS_TOKEN",
    "DATA_ROOT",
    "MEDIA_DIR",
    "RUNS_DIR",
    "DINO_WEIGHTS",
):
    os.environ.pop(_key, None)

import uuid  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def dataset_name() -> str:
    """A FiftyOne dataset name no other test uses."""
    return f"test_{uuid.uuid4().hex[:10]}"
