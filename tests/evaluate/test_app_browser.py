"""The App in a real headless browser, on the evaluated tiny dataset: the run's fields are served.

Runs where Debian's chromium and the playwright Python package are installed; skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evaluate.fields import RunFields

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_page(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the App exited early: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the App did not answer {url} within {timeout} s")


def test_app_serves_the_run_in_a_browser(world, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    from evaluate_world import evaluate_world

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    port = _free_port()
    env = os.environ | {"APP_ADDRESS": "127.0.0.1", "APP_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate" / "app.py"), world.dataset], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/datasets/{world.dataset}"
        _wait_for_page(url, process)
        time.sleep(3)  # the App answers GET / a little before its GraphQL is ready
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.add_init_script("localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true')")
            page.goto(url)
            page.get_by_text(fields.prediction, exact=True).first.wait_for(timeout=60_000)
            page.locator("canvas, img").first.wait_for(timeout=30_000)
            page.wait_for_timeout(2000)  # let the grid paint the masks
            text = page.inner_text("body")
            inputs = page.evaluate("[...document.querySelectorAll('input')].map(i => i.value)")
            screenshot = world.run_dir / "eval" / "val" / "app_screenshot.png"
            page.screenshot(path=str(screenshot))
            browser.close()
        assert world.dataset in inputs  # the dataset picker shows the dataset served
        assert fields.prediction in text and fields.colonies in text and fields.miou in text
        assert screenshot.stat().st_size > 20_000
    finally:
        process.terminate()
        try:
            printed, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            printed, _ = process.communicate()
    assert f"FiftyOne App: {url}" in printed
