"""Whole-quadrat predictions: sliding windows, in the precision `common.runtime` chooses, optional TTA (scales, mirror).

One image at a time, and only the class map and the winning class's probability leave this
module, so memory depends on the largest image, never on how many images a split holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.runtime import Runtime, resolve_runtime
from models.sliding_window import NO_TTA, TestTimeAugmentation, mirrored, predict_logits_tta


@dataclass(frozen=True)
class Prediction:
    """`mask` [H,W] uint8 class indices; `confidence` [H,W] float32 softmax probability of that class."""

    mask: np.ndarray
    confidence: np.ndarray


def window_forward(model: torch.nn.Module, runtime: Runtime, tta: bool) -> Callable[[Tensor], Tensor]:
    """Windows [B,3,h,w] -> logits [B,K,h,w]; with `tta` the mirrored windows ride in the same batch
    (`models.sliding_window.mirrored`; evaluate and predict pass the mirror in `predict_image`'s `tta` instead)."""

    def forward(windows: Tensor) -> Tensor:
        with torch.inference_mode(), runtime.autocast():
            return model(windows).float()

    return mirrored(forward) if tta else forward


def predict_image(
    forward: Callable[[Tensor], Tensor],
    image: np.ndarray,
    num_classes: int,
    window: int,
    window_stride: int,
    batch_size: int,
    device: torch.device,
    tta: TestTimeAugmentation = NO_TTA,
) -> Prediction:
    """Class map and confidence of one `[H,W,3]` uint8 RGB image, blended over `tta` (default: none)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device)
    logits = predict_logits_tta(forward, tensor, num_classes, window, window_stride, tta, batch_size)
    confidence, mask = logits.softmax(0).max(0)
    return Prediction(mask.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy().astype(np.float32))


def predict_images(
    model: torch.nn.Module,
    images: Iterator[np.ndarray],
    num_classes: int,
    window: int,
    window_stride: int,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "auto",
    tta: bool = False,
) -> Iterator[Prediction]:
    """Stream predictions for a stream of images; nothing of an earlier image is kept."""
    runtime = resolve_runtime(device, precision)
    forward = window_forward(model.to(runtime.device).eval(), runtime, tta)
    for image in images:
        yield predict_image(forward, image, num_classes, window, window_stride, batch_size, runtime.device)
