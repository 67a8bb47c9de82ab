"""The App in a real headless browser, on the evaluated tiny dataset: what a reviewer sees.

- both masks (ground truth and prediction) drawn in the taxonomy's palette colours, in the sample grid and in
  the sample modal, checked by sampling screenshot pixels deep inside known class regions;
- every saved review view opens, by its URL, with the number of samples the view holds;
- the sample's `year` shown as written ("2024", not "2,024").

Runs where Debian's chromium and the playwright Python package are installed; skips elsewhere.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from app_server import browser_page, served_app
from evaluate_world import PALETTE, World, evaluate_world

from data_engineering import dataset_contract as contract
from evaluate.app_screenshot import find_chromium
from evaluate.fields import RunFields, gt_segmentation_field

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

TOLERANCE = 8  # levels per channel, deep inside a class region over one colour of the photo
PAINT_TIMEOUT = 90  # seconds for the App to paint what a view shows, on a loaded machine

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed"),
]


def _class_points(mask: np.ndarray, image: np.ndarray, min_depth: float = 3.0) -> dict[int, tuple[float, float]]:
    """For each coral class of a mask, the (x, y) pixel centre deepest inside its region (at least `min_depth` px)
    where the photo is one colour around it too (so resampling blurs neither the mask nor the photo there)."""
    import cv2

    flat = np.ones(mask.shape, dtype=bool)
    padded = np.pad(image.astype(int), ((2, 2), (2, 2), (0, 0)), mode="edge")
    for dy in range(5):
        for dx in range(5):
            flat &= (padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == image).all(axis=2)
    points = {}
    for index in range(1, len(PALETTE)):
        region = (mask == index).astype(np.uint8)
        depth = cv2.distanceTransform(np.pad(region, 1), cv2.DIST_L2, 5)[1:-1, 1:-1] * flat
        if depth.max() >= min_depth:
            y, x = np.unravel_index(int(depth.argmax()), depth.shape)
            points[index] = (x + 0.5, y + 0.5)
    return points


def _screen_pixel(screenshot: np.ndarray, box: dict[str, float], size: tuple[int, int], point: tuple[float, float]):
    """The screenshot pixel showing image point (x, y) of an image of `size` (w, h) drawn to fit `box`."""
    width, height = size
    scale = min(box["width"] / width, box["height"] / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return screenshot[int(top + point[1] * scale), int(left + point[0] * scale)].astype(float)


def _assert_drawn_in(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], where: str) -> None:
    """Each (photo colour, class colour, seen) must be the class colour laid over the photo at one opacity.

    The App blends masks over the photo (opacity 0.7 unless the user moves the slider); one opacity fitted
    over every point of a screenshot must explain every pixel seen, within a few levels. A mask drawn in any
    other colour (FiftyOne's default colours) leaves residuals of tens of levels.
    """
    photo, colour, seen = (np.array([s[i] for s in samples]) for i in range(3))
    alpha = float(((seen - photo) * (colour - photo)).sum() / ((colour - photo) ** 2).sum())
    residual = np.abs(seen - photo - alpha * (colour - photo)).max()
    assert 0.15 <= alpha <= 1.0 and residual <= TOLERANCE, (where, alpha, residual, samples)


def _until_drawn(
    page: Page,
    png: Path,
    where: str,
    canvases: list[Locator],
    sizes: list[tuple[int, int]],
    centres: list[dict[int, tuple[float, float]]],
    photos: list[np.ndarray],
) -> None:
    """Screenshot `page` to `png` until each canvas shows its photo's class points as `_assert_drawn_in` demands.

    The App paints the masks some time after their canvases appear (seconds on a loaded machine, where a fixed
    wait sampled a half-painted grid), so the check is retried until PAINT_TIMEOUT and then fails as it stands.
    """
    from PIL import Image

    deadline = time.monotonic() + PAINT_TIMEOUT
    while True:
        boxes = [canvas.bounding_box() for canvas in canvases]
        page.screenshot(path=str(png))
        shot = np.asarray(Image.open(png).convert("RGB"))
        samples = [
            (photo[int(y), int(x)], PALETTE[index], _screen_pixel(shot, box, size, (x, y)))
            for box, size, found, photo in zip(boxes, sizes, centres, photos)
            for index, (x, y) in found.items()
        ]
        try:
            _assert_drawn_in(samples, where)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.wait_for_timeout(1000)


def test_app_draws_masks_in_palette_colours_and_opens_every_review_view(world: World) -> None:
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    import fiftyone as fo
    from fiftyone.core.utils import to_slug
    from PIL import Image
    from playwright.sync_api import expect

    from prepare.mask_png import read_mask

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    dataset = fo.load_dataset(world.dataset)
    shots = world.run_dir / "eval" / world.dataset / "val"
    sizes = [(m.shape[1], m.shape[0]) for m in world.model_masks]
    saved_config = dataset.app_config.copy()
    with served_app(world.dataset) as app, browser_page() as page:
        url = app.url
        try:
            for field in (gt_segmentation_field("tinytax"), fields.prediction):
                dataset.app_config.active_fields = fo.ActiveFields(paths=[field])  # one mask at a time
                dataset.save()
                samples = list(dataset.select(world.sample_ids, ordered=True))
                photos = [np.asarray(Image.open(s.filepath).convert("RGB")) for s in samples]
                centres = [_class_points(read_mask(s[field].mask_path), p) for s, p in zip(samples, photos)]
                assert {c for found in centres for c in found} == {1, 2}, "the world should hold both coral classes"

                page.goto(url)
                lookers = page.locator("[data-cy=looker] canvas")
                lookers.first.wait_for(timeout=60_000)

                canvases = [lookers.nth(i) for i in range(len(world.sample_ids))]
                _until_drawn(
                    page, shots / f"app_grid_{field}.png", f"{field} in the grid", canvases, sizes, centres, photos
                )

                for sample_id, size, found, photo in zip(world.sample_ids, sizes, centres, photos):
                    page.goto(f"{url}?id={sample_id}")
                    modal = page.locator("[data-cy=modal-looker-container] canvas").first
                    modal.wait_for(timeout=60_000)

                    _until_drawn(
                        page,
                        shots / f"app_modal_{field}.png",
                        f"{field} in the modal of {sample_id}",
                        [modal],
                        [size],
                        [found],
                        [photo],
                    )
                    # the year as written ("2024"): an int field would be drawn with a thousands separator ("2,024")
                    expect(page.locator(f"[data-cy=sidebar-entry-{contract.YEAR}]")).to_have_text("2024")

            dataset.app_config = saved_config
            dataset.save()
            views = [name for name in dataset.list_saved_views() if fields.owns_view(name)]
            assert len(views) >= 3
            for name in views:
                expected = len(dataset.load_saved_view(name))
                page.goto(f"{url}?view={to_slug(name)}")
                page.get_by_text(name).first.wait_for(timeout=60_000)  # the saved-view menu shows it
                shown = rf"^({expected}|No) samples?$" if expected == 0 else rf"^{expected} samples?$"
                expect(page.get_by_text(re.compile(r"^(\d+|No) samples?$")).first).to_have_text(
                    re.compile(shown), timeout=60_000
                )
        finally:
            dataset.app_config = saved_config
            dataset.save()

    assert f"FiftyOne App: {url}" in app.printed[0]
