"""FiftyOne's Model Evaluation panel in a real headless browser shows the mIoU of metrics.json.

The App is served by `evaluate/app.py` on the evaluated tiny world (as in test_app_browser.py); the
panel is opened as a reviewer does (the `+` of the panel bar, "Model Evaluation", the run's eval key),
and its summary table is read from the page. Runs where Debian's chromium and playwright are installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from evaluate_world import CLASSES, World, evaluate_world

from evaluate.app_screenshot import FLAGS, TOOLTIP_SEEN, find_chromium, wait_for_app
from evaluate.fields import RunFields
from evaluate.pipeline import evaluation_dir

if TYPE_CHECKING:
    from playwright.sync_api import Page

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


def _serve(world: World, port: int) -> subprocess.Popen:
    import fiftyone.core.odm.database as fod

    host, db_port = fod.get_db_client().address
    env = os.environ | {
        "APP_ADDRESS": "127.0.0.1",
        "APP_PORT": str(port),
        "FIFTYONE_DATABASE_URI": f"mongodb://{host}:{db_port}",  # the test's own database (see test_app_browser.py)
    }
    return subprocess.Popen(
        [sys.executable, str(REPO / "evaluate" / "app.py"), world.dataset],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def open_evaluation_panel(page: Page, eval_key: str, timeout_ms: float = 120_000) -> dict[str, str]:
    """Open the Model Evaluation panel on `eval_key` as a reviewer does; its summary table, metric -> shown value."""
    page.locator("[data-cy=new-panel-btn]").first.click()
    page.get_by_text("Model Evaluation", exact=True).first.click()
    page.get_by_text(eval_key, exact=True).first.click(timeout=timeout_ms)
    page.locator("td", has_text="IoU background").first.wait_for(timeout=timeout_ms)
    cells = page.locator("tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    return {row[0]: row[1] for row in cells if len(row) == 2}


def test_the_model_evaluation_panel_shows_the_reports_miou(world: World) -> None:
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    from playwright.sync_api import sync_playwright

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    out = evaluation_dir(world.run_dir, world.dataset, "val")
    saved = json.loads((out / "metrics.json").read_text())
    summary = saved["summary"]
    port = _free_port()
    process = _serve(world, port)
    url = f"http://127.0.0.1:{port}/datasets/{world.dataset}"
    screenshot = out / "app_panel.png"
    try:
        wait_for_app(url, timeout=180)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.add_init_script(TOOLTIP_SEEN)
                page.goto(url)
                page.get_by_text(fields.prediction, exact=True).first.wait_for(timeout=120_000)
                shown = open_evaluation_panel(page, fields.eval_key)
                page.screenshot(path=str(screenshot))
            finally:
                browser.close()
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    # the panel rounds to 3 decimals
    assert float(shown["mIoU"]) == pytest.approx(summary["miou"], abs=5e-4)
    assert float(shown["fwIoU"]) == pytest.approx(summary["fwiou"], abs=5e-4)
    assert float(shown["Accuracy"]) == pytest.approx(summary["pixel_accuracy"], abs=5e-4)  # FiftyOne's own row
    for row in saved["per_class"]:
        assert float(shown[f"IoU {row['class']}"]) == pytest.approx(row["iou"], abs=5e-4)
    assert [name for name in shown if name.startswith("IoU ")] == [f"IoU {name}" for name in CLASSES]
    assert screenshot.stat().st_size > 20_000
