"""The App as the browser tests use it: `python evaluate/app.py` serving the test's own database, and a headless page.

One place for what every browser test needs (a free port, the App process and its printed output, chromium with
the flags and the popup dismissed), so the tests hold only what they check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluate.app_screenshot import FLAGS, TOOLTIP_SEEN, find_chromium, wait_for_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServedApp:
    """The dataset's URL in the App, and (once the App has stopped) what `evaluate/app.py` printed."""

    url: str
    printed: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_app(dataset: str, *arguments: str, timeout: float = 240) -> Iterator[ServedApp]:
    """`python evaluate/app.py <dataset> <arguments>` until the block ends, answering at the yielded URL."""
    import fiftyone.core.odm.database as fod

    port = _free_port()
    host, db_port = fod.get_db_client().address
    # FiftyOne attaches a new process to ANY running database service of this user, whatever its
    # FIFTYONE_DATABASE_DIR; naming this process's database makes the App serve the test's own one.
    env = os.environ | {
        "APP_ADDRESS": "127.0.0.1",
        "APP_PORT": str(port),
        "FIFTYONE_DATABASE_URI": f"mongodb://{host}:{db_port}",
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate" / "app.py"), dataset, *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = ServedApp(f"http://127.0.0.1:{port}/datasets/{dataset}")
    try:
        wait_for_app(served.url, timeout=timeout)  # minutes on a loaded machine
        yield served
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        served.printed.append(output)


@contextmanager
def browser_page() -> Iterator[Page]:
    """A page of headless Debian chromium (driven by playwright) the size of a laptop screen, App popup dismissed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.add_init_script(TOOLTIP_SEEN)
            yield page
        finally:
            browser.close()
