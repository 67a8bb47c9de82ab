"""Test isolation: a private FiftyOne database, no developer .env, no telemetry, no network.

These variables must be set before anything imports fiftyone, hence at the top of conftest.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="reefseg-tests-"))
os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_TMP / "fiftyone-db")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
os.environ.pop("FIFTYONE_DATABASE_URI", None)
os.environ["REEFSEG_ENV_FILE"] = str(_SESSION_TMP / "no.env")  # the developer's .env never leaks in
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
for _key in ("CVAT_URL", "CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ACCESS_TOKEN", "DATA_ROOT", "MEDIA_DIR", "RUNS_DIR", "DINO_WEIGHTS"):
    os.environ.pop(_key, None)

import uuid  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def dataset_name() -> str:
    """A FiftyOne dataset name no other test uses."""
    return f"test_{uuid.uuid4().hex[:10]}"
