"""Whole-image logits from a model that sees fixed-size crops: overlapping windows, blended; optional test-time
augmentation (several scales, mirrored) around them.

Shared by train's validation and by evaluate, so both score exactly the same predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from common.errors import UserError

# Where windows go changed once (from "every stride, the last flush" to "spread evenly"); caches of
# window features and of predictions include this tag so that none made under another layout is reused.
WINDOW_LAYOUT = "even"


def default_window_stride(window: int, window_stride: int | None = None) -> int:
    """The largest step between windows: `window_stride` when given (non-zero), else the window itself, i.e. the
    fewest windows that cover the image, spread evenly. On 1920-px quadrats 5 x 5 windows of 392 px scored the
    mIoU of 36 windows of 448 two thirds apart, 2.1-2.3x faster (benchmarks/README.md)."""
    return window_stride or window


def window_starts(length: int, window: int, window_stride: int) -> list[int]:
    """Start offsets along one axis: the fewest windows at most `window_stride` apart that reach the far edge,
    spread evenly so that every overlap is the same to a pixel (no thin sliver of a last window)."""
    if window >= length:
        return [0]
    span = length - window
    gaps = -(-span // window_stride)
    return [(i * span + gaps // 2) // gaps for i in range(gaps + 1)]


def blend_weights(height: int, width: int, blend: str, device: torch.device) -> Tensor:
    """Per-pixel weight of one window: flat, or a tent that trusts window centres over their edges."""
    if blend == "average":
        return torch.ones(height, width, device=device)
    if blend == "smooth":

        def tent(n: int) -> Tensor:
            t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
            return 1.0 - (2 * t - 1).abs() + 1e-3  # never 0, so every pixel is covered

        return tent(height)[:, None] * tent(width)[None, :]
    raise ValueError(f"blend must be 'average' or 'smooth', got {blend!r}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@torch.no_grad()
def predict_logits(
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    num_classes: int,
    window: int | Sequence[int],
    window_stride: int | Sequence[int],
    batch_size: int = 4,
    blend: str = "average",
) -> Tensor:
    """Logits [K,H,W] for image [3,H,W]; `forward` maps windows [B,3,h,w] to logits [B,K,h,w].

    Windows are `window` (int or (h, w)) at most `window_stride` apart, spread evenly from border to border; an image
    smaller than the window along an axis gets one window as long as the image there (the model
    pads it to its patch). Overlaps are blended by `blend_weights`, so windows and batch size
    change nothing where the model agrees with itself.
    """
    (crop_h, crop_w), (stride_h, stride_w) = _pair(window), _pair(window_stride)
    if min(crop_h, crop_w, stride_h, stride_w, batch_size) < 1:
        raise ValueError(
            f"window, window_stride and batch_size must be positive, got {window}, {window_stride}, {batch_size}"
        )
    _, height, width = image.shape
    win_h, win_w = min(crop_h, height), min(crop_w, width)
    boxes = [(y, x) for y in window_starts(height, win_h, stride_h) for x in window_starts(width, win_w, stride_w)]
    weight = blend_weights(win_h, win_w, blend, image.device)
    total = torch.zeros(num_classes, height, width, device=image.device)
    weight_sum = torch.zeros(height, width, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        windows = torch.stack([image[:, y : y + win_h, x : x + win_w] for y, x in chunk])
        logits = forward(windows)
        if logits.shape != (len(chunk), num_classes, win_h, win_w):
            raise ValueError(
                f"forward returned {list(logits.shape)} for windows {list(windows.shape)}; expected {num_classes} classes at window size"
            )
        for (y, x), window_logits in zip(chunk, logits.float()):
            total[:, y : y + win_h, x : x + win_w] += window_logits * weight
            weight_sum[y : y + win_h, x : x + win_w] += weight
    return total / weight_sum


MAX_TTA_SCALE = 4.0  # a 1920-px quadrat at 4x is 7680 px a side: larger is a slip, not a setting


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Multi-scale and mirror test-time augmentation: the image is predicted at each of `scales` (1 = as it is), and
    with `flip` also mirrored left-right; the logits, resized back to the image and un-mirrored, are averaged."""

    __test__ = False  # a dataclass, not a pytest test class

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.scales)
        if not scales or not all(math.isfinite(s) and 0 < s <= MAX_TTA_SCALE for s in scales):
            raise UserError(
                f"--tta-scales must be numbers above 0 and at most {MAX_TTA_SCALE:g} separated by commas, like 0.75,1,1.25; got {','.join(map(str, self.scales)) or 'none'}"
            )
        object.__setattr__(self, "scales", scales)

    @property
    def passes(self) -> int:
        """Predictions blended per image (scales x mirror): the cost relative to no augmentation, roughly."""
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def is_identity(self) -> bool:
        return self.scales == (1.0,) and not self.flip

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what report settings and prediction caches record."""
        return {"scales": list(self.scales), "flip": self.flip}


NO_TTA = TestTimeAugmentation()  # the image as it is, once


def mirrored(forward: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """`forward` that also predicts each window mirrored left-right, in the same batch, and averages the two logits
    with the mirror undone (per window: the same as mirroring the whole image when windows are placed symmetrically)."""

    def forward_both(windows: Tensor) -> Tensor:
        plain, flipped = forward(torch.cat([windows, windows.flip(-1)])).chunk(2)
        return (plain + flipped.flip(-1)) / 2

    return forward_both


def _resize_image(image: Tensor, height: int, width: int) -> Tensor:
    """`[3,H,W]` image resized as a photo editor would (bilinear, antialiased when shrinking), same dtype back."""
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    if image.dtype == torch.uint8:
        return resized.round().clamp(0, 255).to(torch.uint8)
    return resized.to(image.dtype)


@torch.no_grad()
def predict_logits_tta(
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    num_classes: int,
    window: int | Sequence[int],
    window_stride: int | Sequence[int],
    tta: TestTimeAugmentation,
    batch_size: int = 4,
    blend: str = "average",
) -> Tensor:
    """Logits [K,H,W] for image [3,H,W], blended over `tta`'s scales and mirror, in logit space.

    At each scale the image is resized (each side rounded to whole pixels), predicted with the same sliding windows
    (`predict_logits`: window sizes stay in pixels, so a larger scale is more windows), and its logits resized back
    to H x W (bilinear); the mean over scales (and mirrored passes) is returned. Scale 1 is the image itself: no
    augmentation at all gives `predict_logits`' own result exactly.
    """
    forward_tta = mirrored(forward) if tta.flip else forward
    _, height, width = image.shape
    total: Tensor | None = None
    for scale in tta.scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else _resize_image(image, *size)
        logits = predict_logits(forward_tta, scaled, num_classes, window, window_stride, batch_size, blend)
        if size != (height, width):
            logits = torch.nn.functional.interpolate(
                logits[None], size=(height, width), mode="bilinear", align_corners=False
            )[0]
        total = logits if total is None else total + logits
    assert total is not None  # at least one scale (checked by TestTimeAugmentation)
    return total if len(tta.scales) == 1 else total / len(tta.scales)
