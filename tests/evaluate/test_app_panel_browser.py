"""FiftyOne's Model Evaluation panel in a real headless browser shows the numbers of metrics.json and every class.

The App is served by `evaluate/app.py` on the evaluated tiny world in the run's review workspace (the command
`evaluate` prints); the panel is opened as a reviewer does (its tab beside the grid, then the run's eval key), its
summary table is read from the page, and the classes of its confusion matrix from the plot; then the same on a
dataset whose prediction misses a class entirely, in its workspace chosen from the App's workspace menu.
Runs where Debian's chromium and playwright are installed.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
from app_server import browser_page, served_app
from evaluate_world import CLASSES, World, evaluate_world
from missed_class import FOUR, FOUR_PALETTE

from evaluate import writeback
from evaluate.app_screenshot import find_chromium
from evaluate.fields import RunFields
from evaluate.pipeline import evaluation_dir
from evaluate.writeback import NO_LABEL

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed"),
]


def open_evaluation_panel(page: Page, eval_key: str, timeout_ms: float = 120_000) -> dict[str, str]:
    """Open the workspace's Model Evaluation tab on `eval_key` as a reviewer does; its summary table, metric -> value."""
    page.get_by_text("Model Evaluation", exact=True).first.click()
    page.get_by_text(re.compile(r"^\d+ Model Evaluations?$")).first.wait_for(timeout=timeout_ms)
    page.wait_for_timeout(2000)  # the panel's list settles (statuses, notes); a click while it redraws is lost
    page.get_by_text(eval_key, exact=True).first.click(timeout=timeout_ms)
    page.locator("td", has_text="IoU background").first.wait_for(timeout=timeout_ms)
    cells = page.locator("tr").evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    return {row[0]: row[1] for row in cells if len(row) == 2}


def confusion_matrix_classes(page: Page, timeout_ms: float = 60_000) -> list[str]:
    """Expand the panel's confusion matrices; the classes along the plot's axis, in the order drawn."""
    page.get_by_text("Confusion Matrices", exact=True).first.click()
    heatmap = "[...document.querySelectorAll('.js-plotly-plot')].flatMap(p => (p.data || []).filter(t => t.type === 'heatmap'))"
    page.wait_for_function(f"{heatmap}.length > 0", timeout=timeout_ms)
    return page.evaluate(f"{heatmap}[0].x")


def test_the_model_evaluation_panel_shows_the_reports_miou_and_every_class(world: World, astreopora_missed) -> None:
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    out = evaluation_dir(world.run_dir, world.dataset, "val")
    saved = json.loads((out / "metrics.json").read_text())
    summary = saved["summary"]
    screenshot = out / "app_panel.png"
    with served_app(world.dataset, *fields.app_arguments.split()) as app, browser_page() as page:
        page.goto(app.url)
        page.get_by_text(fields.prediction, exact=True).first.wait_for(timeout=120_000)
        shown = open_evaluation_panel(page, fields.eval_key)
        page.screenshot(path=str(screenshot))
        drawn = confusion_matrix_classes(page)

        # a class all missed, in another dataset's review workspace chosen in the App's workspace menu
        dataset, ids, missed, _ = astreopora_missed
        writeback.run_fiftyone_evaluations(dataset, ids, missed, "four", FOUR, FOUR_PALETTE)
        writeback.save_review_workspace(dataset, missed)
        page.goto(f"{app.url.rsplit('/', 1)[0]}/{dataset.name}")  # the App serves every dataset of its database
        page.get_by_text("Unsaved", exact=True).first.click()  # the workspace menu, top right of the panels
        page.get_by_text(missed.workspace, exact=True).first.click()
        open_evaluation_panel(page, missed.eval_key)
        with_missed = confusion_matrix_classes(page)
    # the panel rounds to 3 decimals
    assert float(shown["mIoU"]) == pytest.approx(summary["miou"], abs=5e-4)
    assert float(shown["fwIoU"]) == pytest.approx(summary["fwiou"], abs=5e-4)
    assert float(shown["Accuracy"]) == pytest.approx(summary["pixel_accuracy"], abs=5e-4)  # FiftyOne's own row
    for row in saved["per_class"]:
        assert float(shown[f"IoU {row['class']}"]) == pytest.approx(row["iou"], abs=5e-4)
    assert [name for name in shown if name.startswith("IoU ")] == [f"IoU {name}" for name in CLASSES]
    assert drawn == [*CLASSES, NO_LABEL]  # taxonomy order
    assert with_missed == [*FOUR, NO_LABEL]  # Astreopora too, never predicted (FiftyOne's default state hides it)
    assert screenshot.stat().st_size > 20_000
