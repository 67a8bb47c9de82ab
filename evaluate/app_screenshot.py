"""A real browser on the App: what it serves, and a screenshot for the README.

Debian's chromium, driven headless by the playwright Python package (never `playwright install`:
no browser is downloaded). Both are optional: without them this says how to get them.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.cli import UserError
from common.fileio import atomic_path

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOOLTIP_SEEN = "localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true')"  # the popup would cover the grid


@dataclass(frozen=True)
class PageCheck:
    """What the page showed: its visible text and the values of its inputs (the dataset picker's among them)."""

    text: str
    inputs: list[str]


def find_chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


def wait_for_app(url: str, timeout: float = 60.0) -> None:
    """Until the App answers `url` (plus a moment: its GraphQL comes up just after the page)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    time.sleep(3)
                    return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"the App did not answer {url} within {timeout:.0f} s")


def capture(url: str, path: str | Path, wait_for: str, timeout_s: float = 60.0) -> PageCheck:
    """Load `url` headless, wait until `wait_for` (e.g. a field name) is shown and the grid painted, save a PNG."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError(
            "a screenshot needs the playwright Python package: pip install playwright==1.65.2 (never `playwright install`)"
        ) from None
    chromium = find_chromium()
    if chromium is None:
        raise UserError("a screenshot needs Debian's chromium: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.add_init_script(TOOLTIP_SEEN)
            page.goto(url)
            page.get_by_text(wait_for, exact=True).first.wait_for(timeout=timeout_s * 1000)
            page.locator("canvas, img").first.wait_for(timeout=timeout_s * 1000)
            page.wait_for_timeout(2000)  # the grid decodes and paints the masks
            with atomic_path(path) as tmp:
                page.screenshot(path=str(tmp), type="png")
            return PageCheck(
                page.inner_text("body"), page.evaluate("[...document.querySelectorAll('input')].map(i => i.value)")
            )
        finally:
            browser.close()
