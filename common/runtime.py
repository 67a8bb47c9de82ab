"""Which device and which precision a command computes in, decided in one place for every stage.

Like the top of nanoGPT's train.py: the device, whether bf16 autocast is used, and the autocast
context. train (its loop, validation and feature cache), evaluate and the CVAT push all ask
`resolve_runtime`, so validation and evaluation on the same machine compute in the same precision
and a run is scored exactly as `evaluate` predicts it. bf16 is used only where the hardware
computes it natively (CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX): elsewhere it is
emulated and slower than fp32.

Importing this module loads no torch (so `--help` answers at once); its functions do.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp32")
PRECISION_HELP = "auto (bf16 where the device computes it natively), bf16 or fp32"


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else a UserError listing them."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def resolve_device(setting: str) -> torch.device:
    """`auto` (or empty) picks CUDA when there is one; an unavailable GPU is a user error, not a crash."""
    import torch

    if setting in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise UserError(f"device {setting!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {setting!r} was asked for but no CUDA GPU is visible; use --device cpu")
    return device


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 or AMX tiles."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


@dataclass(frozen=True)
class Runtime:
    """The device and the autocast dtype (`torch.bfloat16`, or None for plain fp32) of one command."""

    device: torch.device
    dtype: torch.dtype | None = None

    @property
    def bf16(self) -> bool:
        return self.dtype is not None

    @property
    def precision(self) -> str:
        """`bf16` or `fp32`: what the computation actually runs in (for cache keys and logs)."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> AbstractContextManager[object]:
        return autocast(self.device, self.dtype)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """`torch.autocast` to `dtype` on `device`, or a context that changes nothing for fp32 (`dtype` None)."""
    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 for `auto` where `device` computes it natively, else None (fp32); `bf16` where it does not is a UserError."""
    import torch

    native = bf16_native(device)
    if check_precision(precision) == "bf16" and not native:
        raise UserError(f"this {device.type} device does not compute bf16 natively; use --precision fp32 or auto")
    return torch.bfloat16 if precision != "fp32" and native else None


def resolve_runtime(device: str, precision: str) -> Runtime:
    """The device named by `device` (`auto`: CUDA when there is one) and the precision `precision` asks for there."""
    resolved = resolve_device(device)
    return Runtime(resolved, autocast_dtype(resolved, precision))


def freeze_loaded_objects() -> None:
    """Leave everything loaded so far (modules, the model, FiftyOne's documents) out of Python's cyclic collector.

    A full collection walks every tracked object while it holds the GIL: with torch and FiftyOne loaded that is
    half a million objects and 0.1–0.7 s a pass on a 2-core CPU, and the colonies' and journal's many small lists
    start one every few photos, stalling the model's loop beside them. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


@contextmanager
def loaded_objects_frozen() -> Iterator[None]:
    """`freeze_loaded_objects` for the length of a command's work (its loop and what it writes after it), given
    back to the collector after it, so that what a finished run leaves behind (its model, its documents) can still
    be collected in a longer-lived process. Inside an outer freeze (another block, a loaded CVAT function) the
    objects are left frozen at the end: giving them back is the outer one's to do."""
    outer = gc.get_freeze_count() > 0
    freeze_loaded_objects()
    try:
        yield
    finally:
        if not outer:
            gc.unfreeze()
