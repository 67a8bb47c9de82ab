"""Partial fine-tuning: one training step's time with the last N backbone blocks trained (`train_blocks`).

    python benchmarks/bench_finetune.py                              # CPU: ViT-S/14, crop 448, batch 8
    python benchmarks/bench_finetune.py --device cuda --backbone dinov2_vitb14 --steps 20

For each head (linear, segformer) and each `train_blocks` setting (0, 1, 2, all; `--lora-rank` adds
LoRA rows), the median time of a full training step as `train.loop` runs it: cached frozen part
(fp16, as the feature cache stores it) -> trained blocks -> head loss -> backward -> gradient clip ->
AdamW over the param groups of `train.loop.param_groups`; `all` runs the whole backbone on the images
every step (no cache). Random backbone weights (speed does not depend on them), random 448² views:
the demo quadrats' training crop. Prints the calibration forward and the load average of the run.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

from benchmarks.fixtures import NUM_CLASSES, calibration_forward  # noqa: E402
from common.runtime import resolve_runtime  # noqa: E402
from common.table import format_table  # noqa: E402
from models.backbones import build_backbone  # noqa: E402
from models.heads import build_head  # noqa: E402
from models.segmenter import Segmenter  # noqa: E402
from train.config import load_config  # noqa: E402
from train.loop import TrainStep, param_groups  # noqa: E402


def step_seconds(
    backbone_name: str, head_name: str, train_blocks: int | str, lora_rank: int, args: argparse.Namespace
) -> tuple[float, int]:
    """Median seconds of one training step, and the number of trained backbone parameters."""
    runtime = resolve_runtime(args.device, args.precision)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone(backbone_name, layers=None if head_name == "linear" else 4)
    backbone.set_trainable(train_blocks, lora_rank)
    head = build_head(head_name, backbone.embed_dim, len(backbone.layers), NUM_CLASSES, **args.head_config[head_name])
    segmenter = Segmenter(backbone, head).to(runtime.device).train()
    config = load_config(
        None, backbone=backbone_name, head=head_name, lr=1e-3, train_blocks=train_blocks, lora_rank=lora_rank
    )
    optimizer = torch.optim.AdamW(param_groups(segmenter, config), lr=config.lr, weight_decay=config.weight_decay)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step = TrainStep(segmenter)
    images = torch.randint(0, 256, (args.batch_size, 3, args.crop, args.crop), dtype=torch.uint8, device=runtime.device)
    target = torch.randint(0, NUM_CLASSES, (args.batch_size, args.crop, args.crop), device=runtime.device)
    inputs: torch.Tensor | list[torch.Tensor] = images
    if train_blocks != "all":  # what the feature cache hands the step: the frozen part, stored as fp16
        with runtime.autocast():
            inputs = [t.to(torch.float16).float().contiguous() for t in segmenter.frozen_features(images)]
    seconds = []
    for index in range(args.steps + 1):
        start = time.perf_counter()
        with runtime.autocast():
            loss = step(inputs, target)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        if index:  # the first step allocates
            seconds.append(time.perf_counter() - start)
    trained = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    return statistics.median(seconds), trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--heads", default="linear,segformer")
    parser.add_argument("--train-blocks", default="0,1,2,all")
    parser.add_argument("--lora-rank", type=int, default=8, help="also LoRA rows at train_blocks 2 (0: none)")
    parser.add_argument("--crop", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    args.head_config = {"linear": {}, "segformer": {"channels": 256, "dropout": 0.1}}
    torch.set_num_threads(os.cpu_count() or 1)
    runtime = resolve_runtime(args.device, args.precision)
    calibration = calibration_forward(runtime.device)
    settings: list[tuple[int | str, int]] = [(int(b) if b.isdigit() else b, 0) for b in args.train_blocks.split(",")]
    if args.lora_rank:
        settings.append((2, args.lora_rank))
    rows = []
    for head_name in args.heads.split(","):
        frozen = None
        for train_blocks, lora_rank in settings:
            seconds, trained = step_seconds(args.backbone, head_name, train_blocks, lora_rank, args)
            frozen = seconds if train_blocks == 0 else frozen
            label = f"{train_blocks}" + (f" + LoRA r{lora_rank}" if lora_rank else "")
            ratio = f"{seconds / frozen:.1f}x" if frozen else ""
            rows.append(
                [
                    head_name,
                    label,
                    "live" if train_blocks == "all" else "cached",
                    f"{trained / 1e6:.2f} M",
                    f"{seconds:.3f}",
                    ratio,
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    print()
    print(
        f"{args.backbone}, crop {args.crop}, batch {args.batch_size}, {runtime.device} ({runtime.precision}), "
        f"median of {args.steps} steps; load average {os.getloadavg()[0]:.1f}; calibration forward (ViT-S/14 518², batch 1) "
        + ", ".join(f"{k} {v:.2f} s" for k, v in calibration.items())
    )
    print(format_table(["head", "train_blocks", "input", "trained backbone params", "s/step", "vs frozen"], rows))


if __name__ == "__main__":
    main()
