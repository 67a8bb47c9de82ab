"""Whole-quadrat predictions: sliding windows, bf16 where the device has it, optional flip TTA.

One image at a time, and only the class map and the winning class's probability leave this
module, so memory depends on the largest image, never on how many images a split holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from common.cli import UserError
from models.sliding_window import predict_logits

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Prediction:
    """`mask` [H,W] uint8 class indices; `confidence` [H,W] float32 softmax probability of that class."""

    mask: np.ndarray
    confidence: np.ndarray


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when there is one; an unavailable device is a user error, not a crash."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but this machine has no CUDA GPU; use --device cpu")
    return device


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is worth it on CUDA GPUs that have it and on CPUs with AVX-512 BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not bf16_supported(device):
        raise UserError(f"this {device.type} has no bf16 support; use --precision fp32 or auto")
    return precision == "bf16" or (precision == "auto" and bf16_supported(device))


def window_forward(model: torch.nn.Module, device: torch.device, bf16: bool, tta: bool) -> Callable[[Tensor], Tensor]:
    """Windows [B,3,h,w] -> logits [B,K,h,w]; with `tta` the mirrored windows ride in the same batch."""

    def forward(windows: Tensor) -> Tensor:
        batch = torch.cat([windows, windows.flip(-1)]) if tta else windows
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            logits = model(batch).float()
        if tta:
            plain, mirrored = logits.chunk(2)
            logits = (plain + mirrored.flip(-1)) / 2
        return logits

    return forward


def predict_image(
    forward: Callable[[Tensor], Tensor],
    image: np.ndarray,
    num_classes: int,
    crop: int,
    stride: int,
    batch_size: int,
    device: torch.device,
) -> Prediction:
    """Class map and confidence of one `[H,W,3]` uint8 RGB image."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device)
    logits = predict_logits(forward, tensor, num_classes, crop, stride, batch_size)
    confidence, mask = logits.softmax(0).max(0)
    return Prediction(mask.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy().astype(np.float32))


def predict_images(
    model: torch.nn.Module,
    images: Iterator[np.ndarray],
    num_classes: int,
    crop: int,
    stride: int,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tta: bool = False,
) -> Iterator[Prediction]:
    """Stream predictions for a stream of images; nothing of an earlier image is kept."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(device).eval()
    forward = window_forward(model, device, use_bf16(precision, device), tta)
    for image in images:
        yield predict_image(forward, image, num_classes, crop, stride, batch_size, device)
