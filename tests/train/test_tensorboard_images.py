"""TensorBoard images of each validation: the confusion matrix and previews in the palette's colours, read back."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PALETTE, tiny_overrides
from PIL import Image

from prepare.layout import IGNORE_COLOR
from prepare.mask_png import read_mask
from train import cli
from train.tensorboard_images import GAP, Previews, colour_mask, preview_strip

pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")
FULL_PALETTE = [(0, 0, 0), *PALETTE]


def _images(run: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={IMAGES: 0})
    events.Reload()
    return {
        tag: [
            (e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
            for e in events.Images(tag)
        ]
        for tag in events.Tags()[IMAGES]
    }


def test_each_validation_logs_its_confusion_matrix_and_previews(tmp_path, prepared, monkeypatch) -> None:
    argv = ["train.py", "--config", "train/configs/linear.yaml"]
    for key, value in tiny_overrides(tmp_path, prepared, steps=20, eval_every=10).items():
        argv += [f"--{key}", str(value) if not isinstance(value, list) else f"[{', '.join(map(str, value))}]"]
    monkeypatch.setattr(sys, "argv", argv)
    torch.set_num_threads(1)
    cli.main()

    images = _images(tmp_path / "runs" / "linear_toy_toy")
    assert sorted(images) == ["val/confusion_matrix", "val_preview/0", "val_preview/1"]  # 2 val images, both shown
    assert [step for step, _ in images["val/confusion_matrix"]] == [10, 20]
    assert images["val/confusion_matrix"][0][1].shape[0] > 200  # a rendered figure, not a placeholder
    val_masks = [read_mask(p) for p in sorted((prepared / "val" / "labels").glob("*.png"))]
    for tag in ("val_preview/0", "val_preview/1"):
        assert [step for step, _ in images[tag]] == [10, 20]
        strip = images[tag][-1][1]
        width = (strip.shape[1] - 2 * GAP) // 3
        truth = strip[:, width + GAP : 2 * width + GAP]
        predicted = strip[:, 2 * width + 2 * GAP :]
        assert any(np.array_equal(truth, colour_mask(m, FULL_PALETTE)) for m in val_masks)  # exact palette colours
        colours = {tuple(c) for c in predicted.reshape(-1, 3)}
        assert colours <= set(FULL_PALETTE) and len(colours) > 1


def test_previews_shrink_by_a_whole_factor_and_keep_class_colours() -> None:
    previews = Previews(limit=1)
    image = torch.zeros(3, 1000, 800, dtype=torch.uint8)
    mask = torch.zeros(1000, 800, dtype=torch.long)
    mask[:500] = 2
    mask[-10:] = 255
    previews.add(image, mask, mask)
    previews.add(image, mask, mask)  # beyond the limit: dropped
    assert len(previews.shown) == 1
    shown_image, shown_mask, _ = previews.shown[0]
    assert shown_image.shape == (334, 267, 3) and shown_mask.shape == (334, 267)  # every third pixel: <= 384 a side
    strip = preview_strip(*previews.shown[0], FULL_PALETTE)
    assert strip.shape == (334, 3 * 267 + 2 * GAP, 3)
    truth = strip[:, 267 + GAP : 2 * 267 + GAP]
    assert tuple(truth[0, 0]) == PALETTE[1] and tuple(truth[200, 0]) == (0, 0, 0)
    assert tuple(truth[-1, 0]) == IGNORE_COLOR  # ignored pixels in the ignore colour, not a class's
