"""FiftyOne's Model Evaluation panel in a real headless browser shows the mIoU of metrics.json.

The App is served by `evaluate/app.py` on the evaluated tiny world (tests/evaluate/app_server.py); the
panel is opened as a reviewer does (the `+` of the panel bar, "Model Evaluation", the run's eval key),
and its summary table is read from the page. Runs where Debian's chromium and playwright are installed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from app_server import browser_page, served_app
from evaluate_world import CLASSES, World, evaluate_world

from evaluate.app_screenshot import find_chromium
from evaluate.fields import RunFields
from evaluate.pipeline import evaluation_dir

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed"),
]


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

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    out = evaluation_dir(world.run_dir, world.dataset, "val")
    saved = json.loads((out / "metrics.json").read_text())
    summary = saved["summary"]
    screenshot = out / "app_panel.png"
    with served_app(world.dataset) as app, browser_page() as page:
        page.goto(app.url)
        page.get_by_text(fields.prediction, exact=True).first.wait_for(timeout=120_000)
        shown = open_evaluation_panel(page, fields.eval_key)
        page.screenshot(path=str(screenshot))
    # the panel rounds to 3 decimals
    assert float(shown["mIoU"]) == pytest.approx(summary["miou"], abs=5e-4)
    assert float(shown["fwIoU"]) == pytest.approx(summary["fwiou"], abs=5e-4)
    assert float(shown["Accuracy"]) == pytest.approx(summary["pixel_accuracy"], abs=5e-4)  # FiftyOne's own row
    for row in saved["per_class"]:
        assert float(shown[f"IoU {row['class']}"]) == pytest.approx(row["iou"], abs=5e-4)
    assert [name for name in shown if name.startswith("IoU ")] == [f"IoU {name}" for name in CLASSES]
    assert screenshot.stat().st_size > 20_000
