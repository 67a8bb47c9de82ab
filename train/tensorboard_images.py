"""Images train adds to TensorBoard at each validation: the confusion matrix and a few prediction previews.

Tags (docs/training.md): `val/confusion_matrix` (row-normalised heatmap: where each class's ground-truth
pixels went, with pixel counts) and `val_preview/<n>` (image | ground truth | prediction, masks in the
taxonomy's palette, ignored pixels in the ignore colour), for the first `PREVIEW_IMAGES` validation
images of the main process, shrunk to at most `PREVIEW_SIDE` pixels a side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from prepare.layout import png_palette

PREVIEW_IMAGES = 3
PREVIEW_SIDE = 384
GAP = 4  # white pixels between the three panels of a preview


@dataclass
class Previews:
    """The first `limit` validation images this process predicted, as (image, ground truth, prediction)."""

    limit: int = PREVIEW_IMAGES
    shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, image: Tensor, target: Tensor, prediction: Tensor) -> None:
        if len(self.shown) < self.limit:
            step = max(1, -(-max(image.shape[-2:]) // PREVIEW_SIDE))  # a whole factor: masks stay class indices
            self.shown.append(
                (
                    image.cpu().permute(1, 2, 0).numpy()[::step, ::step],
                    target.cpu().numpy()[::step, ::step],
                    prediction.cpu().numpy()[::step, ::step],
                )
            )


def colour_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """`[H, W, 3]` uint8: each class index in its palette colour (background first), 255 in the ignore colour."""
    table = np.frombuffer(png_palette(palette), dtype=np.uint8).reshape(256, 3)
    return table[np.clip(mask, 0, 255).astype(np.uint8)]


def preview_strip(
    image: np.ndarray, target: np.ndarray, prediction: np.ndarray, palette: Sequence[Sequence[int]]
) -> np.ndarray:
    """Image, ground truth and prediction side by side, `[H, 3W + 2 GAP, 3]` uint8."""
    height = image.shape[0]
    gap = np.full((height, GAP, 3), 255, dtype=np.uint8)
    panels = [image.astype(np.uint8), colour_mask(target, palette), colour_mask(prediction, palette)]
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str) -> Any:
    """A matplotlib figure: the row-normalised pixel confusion matrix, shares and counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    text = f"{share[i, j]:.0%}\n{matrix[i, j]}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def log_validation_images(
    writer: Any,
    step: int,
    matrix: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    previews: Previews,
) -> None:
    """Add the confusion matrix and the previews of one validation (the figure is closed by `add_figure`)."""
    writer.add_figure(
        "val/confusion_matrix", confusion_figure(matrix, classes, f"validation at step {step}: pixel confusion"), step
    )
    for n, (image, target, prediction) in enumerate(previews.shown):
        writer.add_image(f"val_preview/{n}", preview_strip(image, target, prediction, palette), step, dataformats="HWC")
