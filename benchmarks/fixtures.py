"""What several benchmarks share: the calibration forward, and a run folder with random weights.

The calibration is one ViT-S/14 forward at 518 x 518, batch 1, measured in the same run: this 2-core
CPU's speed varies by about 1.5x from day to day, so figures are also given as multiples of it.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import torch

NUM_CLASSES = 17  # finegrained: 16 genera + background


def calibration_forward(device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one ViT-S/14 forward at 518x518, batch 1: fp32, and bf16 where the device computes it natively."""
    from common.runtime import bf16_native
    from models.backbones import build_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_backbone("dinov2_vits14").to(device).eval()
    x = torch.rand(1, 3, 518, 518, device=device)
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        if bf16 and not bf16_native(device):
            continue
        seconds = []
        for run in range(repeats + 1):
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if run:
                seconds.append(time.perf_counter() - start)
        out[name] = statistics.median(seconds)
    return out


def takes_background_bias(head_name: str) -> bool:
    """Whether `write_run` can add a background bias to this head: it needs a per-pixel classifier."""
    from models.heads import build_head

    return hasattr(build_head(head_name, 8, 4, 2), "classifier")


def write_run(
    run_dir: Path, backbone_name: str, window: int, head_name: str = "linear", background_bias: float = 0.0
) -> None:
    """A run folder with RANDOM backbone weights (speed does not depend on them) and a head whose random weights
    are scaled up, so the prediction is fragmented into many colonies: a pessimistic case for post-processing.

    `background_bias` is added to the background logit: the larger, the fewer (and smaller) the colonies, so
    post-processing can also be timed at the tens to hundreds of colonies a real quadrat holds."""
    from models.backbones import build_backbone
    from models.checkpoint import CheckpointSpec, save_run_checkpoint
    from models.heads import build_head

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone(backbone_name, layers=None if head_name == "linear" else 4)
    head = build_head(head_name, backbone.embed_dim, len(backbone.layers), NUM_CLASSES)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in head.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (3.0 if tensor.ndim > 1 else 0.1))
        if background_bias:
            if not takes_background_bias(head_name):
                raise ValueError(f"a background bias needs a head with a per-pixel classifier, not {head_name}")
            head.classifier.bias[0] += background_bias
    classes = ["background", *(f"genus_{i:02d}" for i in range(1, NUM_CLASSES))]
    spec = CheckpointSpec.of(
        backbone,
        head,
        classes,
        [[i * 15, 0, 0] for i in range(NUM_CLASSES)],
        "finegrained",
        window=window,
        window_stride=window,
    )
    save_run_checkpoint(run_dir, head, spec)
