"""The App in a real headless browser, on the evaluated tiny dataset: the run's fields are served.

Runs where Debian's chromium and the playwright Python package are installed; skips elsewhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from evaluate_world import World, evaluate_world

from evaluate.app_screenshot import capture, find_chromium, wait_for_app
from evaluate.fields import RunFields

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_the_run_in_a_browser(world: World) -> None:
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    port = _free_port()
    import fiftyone.core.odm.database as fod

    host, db_port = fod.get_db_client().address
    # FiftyOne attaches a new process to ANY running database service of this user, whatever its
    # FIFTYONE_DATABASE_DIR; naming this process's database makes the App serve the test's own one.
    env = os.environ | {
        "APP_ADDRESS": "127.0.0.1",
        "APP_PORT": str(port),
        "FIFTYONE_DATABASE_URI": f"mongodb://{host}:{db_port}",
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate" / "app.py"), world.dataset],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/datasets/{world.dataset}"
    screenshot = world.run_dir / "eval" / world.dataset / "val" / "app_screenshot.png"
    try:
        wait_for_app(url)
        page = capture(url, screenshot, wait_for=fields.prediction)
    finally:
        process.terminate()
        try:
            printed, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            printed, _ = process.communicate()
    assert f"FiftyOne App: {url}" in printed
    assert world.dataset in page.inputs  # the dataset picker shows the dataset served
    assert fields.prediction in page.text and fields.colonies in page.text and fields.miou in page.text
    assert screenshot.stat().st_size > 20_000
