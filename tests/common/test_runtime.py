"""One decision of device and precision for every stage: the native-bf16 probe, the precision list, the autocast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import UserError
from common.runtime import (
    PRECISIONS,
    Runtime,
    bf16_native,
    loaded_objects_frozen,
    resolve_device,
    resolve_runtime,
)

REPO = Path(__file__).resolve().parents[2]


def _cpu_probes(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """A CPU with or without native bf16, whose oneDNN still emulates bf16 (what the old evaluate probe accepted)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_precision_follows_the_native_probe_only(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    _cpu_probes(monkeypatch, native)
    assert bf16_native(torch.device("cpu")) is native
    auto = resolve_runtime("cpu", "auto")
    assert (
        auto.device == torch.device("cpu") and auto.bf16 is native and auto.precision == ("bf16" if native else "fp32")
    )
    assert resolve_runtime("cpu", "fp32").dtype is None
    if native:
        assert resolve_runtime("cpu", "bf16").dtype == torch.bfloat16
    else:
        with pytest.raises(UserError, match="does not compute bf16 natively; use --precision fp32 or auto"):
            resolve_runtime("cpu", "bf16")


def test_precision_and_device_errors_name_the_fix() -> None:
    assert PRECISIONS == ("auto", "bf16", "fp32")
    with pytest.raises(UserError, match="precision must be one of auto, bf16, fp32, not 'fp16'"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is visible; use --device cpu"):
            resolve_device("cuda:1")


def test_autocast_context_is_bf16_or_nothing() -> None:
    seen = []
    for runtime in (Runtime(torch.device("cpu")), Runtime(torch.device("cpu"), torch.bfloat16)):
        with runtime.autocast():
            seen.append((torch.is_autocast_enabled("cpu"), (torch.ones(2, 2) @ torch.ones(2, 2)).dtype))
    assert seen == [(False, torch.float32), (True, torch.bfloat16)]


class AutocastRecorder(torch.nn.Module):
    """Two-class logits of zeros; remembers whether each call ran under bf16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return torch.zeros(images.shape[0], 2, *images.shape[-2:])


@pytest.mark.parametrize("native", [True, False])
def test_train_validation_and_evaluation_pick_the_same_precision(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """On one machine, validation during training and `evaluate` predict in the same precision (both `auto`)."""
    from evaluate.inference import predict_images
    from train.config import load_config, with_default_window
    from train.loop import Distributed, train_runtime, validate

    _cpu_probes(monkeypatch, native)
    config = with_default_window(load_config(None, window=28, device="cpu", precision="auto"))
    validating = AutocastRecorder()
    image, mask = torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(28, 28, dtype=torch.long)
    validate(validating, [(image, mask)], ["background", "coral"], config, train_runtime(config), Distributed())
    evaluating = AutocastRecorder()
    list(predict_images(evaluating, iter([np.zeros((28, 28, 3), np.uint8)]), 2, 28, 28, device="cpu", precision="auto"))
    assert validating.calls == evaluating.calls == [native]


def test_runtime_and_config_import_no_torch() -> None:
    code = "import sys, common.runtime, train.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_models_and_user_error_import_without_fire() -> None:
    code = (
        "import sys, models, models.checkpoint, models.backbones, models.heads, models.sliding_window, common.errors, common.runtime; "
        "print('fire' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from common.cli import UserError as FromCli

    assert FromCli is UserError


def test_a_freeze_inside_another_leaves_the_outer_one_frozen() -> None:
    import gc

    gc.unfreeze()
    try:
        with loaded_objects_frozen():
            outer = gc.get_freeze_count()
            with loaded_objects_frozen():
                assert gc.get_freeze_count() >= outer
            assert gc.get_freeze_count() >= outer > 0  # the inner block gave nothing back
        assert gc.get_freeze_count() == 0  # the outer one did
    finally:
        gc.unfreeze()
