"""Heads side by side on the same cached features: step time, val mIoU after the same steps, parameters, memory.

    python benchmarks/bench_heads.py --table loss      # linear and segformer: the loss on every pixel, at 1/4, on points
    python benchmarks/bench_heads.py --table heads     # linear, segformer, upernet, mask2former, pmt at their defaults
    python benchmarks/bench_heads.py --table heads --train-blocks 2   # the same with the last two blocks trained
    python benchmarks/bench_heads.py --table heads --device cuda --steps 2000

The data are the demo quadrats generated at the users' size (1920x1920, 45 colonies, 18 train, 6 val,
6 test; `benchmarks/bench_windows.py` makes them), prepared with the finegrained taxonomy (17 classes).
Every row trains with `train.loop.train` from the head's own config in `train/configs/` on the same
feature cache of ViT-S/14 with RANDOM weights (none can be downloaded here), so accuracy figures
compare heads and losses with each other, not with real models. For each row:

- val mIoU after `--steps` steps (validated once, at the end, with the default sliding windows);
- seconds per training step: the median of `--repeats` short runs of `--timing-steps` steps, the rows
  taking turns, so that a machine shared with other work slows every row alike;
- parameters of the head, and the peak memory of the accuracy run (resident set of its own process
  on a CPU, backbone and validation included; GPU memory allocated on a GPU).
 A calibration forward (ViT-S/14 at 518², batch 1, bf16 where native)
is timed at the start and the end, so figures from different days can be put side by side.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from common.table import format_table  # noqa: E402

LOSS_ROWS = [  # (label, head options, whether segformer computes as it did before its projections were folded)
    ("every pixel, former segformer computation (the former default)", {"loss_points": 0}, True),
    ("every pixel", {"loss_points": 0}, False),
    ("1/4 resolution", {"loss_points": 0, "loss_scale": 0.25}, False),
    ("4096 points, uniform", {"loss_points": 4096, "importance_ratio": 0.0}, False),
    ("4096 points, 3/4 uncertain (default)", {"loss_points": 4096}, False),
]
HEADS = ["linear", "segformer", "upernet", "mask2former", "pmt"]


def former_segformer_forward(self: Any, features: list[Any]) -> Any:
    """SegFormerHead's computation before its projections were folded into the fuse: project, concatenate, fuse."""
    import torch

    from models.heads.base import upsample_to

    size = features[0].shape[-2:]
    x = torch.cat([upsample_to(p(f), size) for p, f in zip(self.projections, features)], dim=1)
    return self.classifier(self.dropout(self.fuse(x)))


@contextlib.contextmanager
def former_computation(former: bool) -> Iterator[None]:
    """With `former`, segformer computes as it did before (the same parameters and function, more arithmetic)."""
    from models.heads.segformer import SegFormerHead

    folded = SegFormerHead.forward
    if former:
        SegFormerHead.forward = former_segformer_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        SegFormerHead.forward = folded  # type: ignore[method-assign]


def train_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run as `spec` says: the train summary and the head's parameter count."""
    import torch

    from common.settings import load_settings
    from train.config import load_config, resolve_config
    from train.loop import train

    base = load_config(f"{spec['head']}.yaml")
    config = load_config(
        f"{spec['head']}.yaml",
        data_dir=spec["data"],
        runs_dir=spec["runs"],
        cache_dir=spec["cache"],
        name=spec["name"],
        steps=spec["steps"],
        eval_every=spec["steps"],
        warmup_steps=min(base.warmup_steps, spec["steps"]),
        patience=0,
        device=spec["device"],
        workers=0,
        seed=0,
        head_config={**base.head_config, **spec["options"]},
        max_val_images=spec.get("max_val_images", 0),
        train_blocks=spec.get("train_blocks", base.train_blocks),
    )
    with warnings.catch_warnings(), former_computation(spec.get("former", False)):
        warnings.simplefilter("ignore")
        summary = train(resolve_config(config, load_settings()))
    state = torch.load(Path(summary["run"]) / "train_state.pt", map_location="cpu", weights_only=True)
    trained = {**state["head"], **state.get("backbone", {})}  # the head, and the backbone blocks trained with it
    return {
        **summary,
        "params": sum(
            t.numel()
            for k, t in trained.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        ),
    }


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """An accuracy run in this (fresh) process: val mIoU after the steps, parameters, peak memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    cuda = spec["device"].startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    summary = train_run(spec)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "miou": summary["last_miou"],
        "step_seconds": summary["train_seconds"] / spec["steps"],
        "params": summary["params"],
        "peak_bytes": peak,
    }


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """`probe` in a fresh process (so that each run's peak memory is its own)."""
    result = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"run {spec['name']} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def calibration_forward(device: str, repeats: int = 3) -> float:
    """Median seconds of one ViT-S/14 forward at 518², batch 1, in bf16 where the device computes it natively."""
    import torch

    from common.runtime import autocast, autocast_dtype
    from models.backbones import build_backbone

    dev = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone("dinov2_vits14").to(dev).eval()
    image = torch.rand(1, 3, 518, 518, device=dev)
    times = []
    with torch.no_grad(), autocast(dev, autocast_dtype(dev, "auto")):
        backbone(image)
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            backbone(image)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--table",
        choices=["loss", "heads"],
        default="heads",
        help="loss: linear and segformer with each loss; heads: every head",
    )
    parser.add_argument(
        "--heads", nargs="+", default=None, help="heads of the table (loss: linear segformer; heads: all five)"
    )
    parser.add_argument("--size", type=int, default=1920, help="side of the square quadrats")
    parser.add_argument("--images", type=int, default=30, help="demo quadrats (18 train, 6 val, 6 test of 30)")
    parser.add_argument("--colonies", type=int, default=45, help="colonies per quadrat at the first survey")
    parser.add_argument("--steps", type=int, default=500, help="training steps of each accuracy run")
    parser.add_argument("--timing-steps", type=int, default=20, help="steps of each timing run")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per row (the median is reported)")
    parser.add_argument(
        "--max-val-images",
        type=int,
        default=0,
        help="validate the accuracy runs on the first N val quadrats (0: all 6)",
    )
    parser.add_argument(
        "--train-blocks",
        default="0",
        help="train the last N backbone blocks with every head (the cache then holds block L-N's output), or all",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--work",
        default="",
        help="keep data, caches and runs here (reruns reuse data and caches); default: a temporary folder",
    )
    parser.add_argument("--probe", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return

    import torch

    from benchmarks.bench_windows import prepared_quadrats

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if args.table == "loss":
        rows_spec = [
            (head, label, options, former)
            for head in (args.heads or ["linear", "segformer"])
            for label, options, former in LOSS_ROWS
            if head == "segformer" or not former
        ]
    else:
        rows_spec = [(head, "default", {}, False) for head in (args.heads or HEADS)]
    with tempfile.TemporaryDirectory(prefix="bench_heads_") as temporary:
        work = Path(args.work).expanduser() if args.work else Path(temporary)
        data = prepared_quadrats(work, args.images, args.size, args.colonies)
        calibration = [calibration_forward(args.device)]
        stamp = time.strftime("%Y%m%d%H%M%S")

        def spec(i: int, head: str, options: dict, former: bool, steps: int, tag: str) -> dict[str, Any]:
            return {
                "head": head,
                "options": options,
                "former": former,
                "steps": steps,
                "name": f"{tag}_{i}_{head}_{stamp}",
                "data": str(data),
                "runs": str(work / "runs"),
                "cache": str(work / "cache"),
                "device": args.device,
                "threads": threads,
                "train_blocks": int(args.train_blocks) if args.train_blocks.isdigit() else args.train_blocks,
            }

        # Heads reading four layers first: their cache entries hold the linear head's last layer too.
        order = sorted(range(len(rows_spec)), key=lambda i: rows_spec[i][0] == "linear")
        accuracy: dict[int, dict[str, Any]] = {}
        for i in order:
            head, label, options, former = rows_spec[i]
            accuracy[i] = run_probe(
                {**spec(i, head, options, former, args.steps, "accuracy"), "max_val_images": args.max_val_images}
            )
            print(f"  {head}, {label}: {accuracy[i]}", file=sys.stderr, flush=True)
        timings: list[list[float]] = [[] for _ in rows_spec]
        for r in range(args.repeats):  # rows take turns, so load on a shared machine falls on each alike
            for i in order:
                head, label, options, former = rows_spec[i]
                result = train_run(
                    {**spec(i, head, options, former, args.timing_steps, f"timing{r}"), "max_val_images": 1}
                )
                timings[i].append(result["train_seconds"] / args.timing_steps)
                print(f"  timing {r}: {head}, {label}: {timings[i][-1]:.3f} s/step", file=sys.stderr, flush=True)
        calibration.append(calibration_forward(args.device))

    rows = []
    for i, (head, label, _options, _former) in enumerate(rows_spec):
        baseline = next(j for j, (h, _, _, _) in enumerate(rows_spec) if h == head)
        seconds = statistics.median(timings[i])
        rows.append(
            [
                head,
                label,
                f"{1000 * seconds:.0f}",
                f"{statistics.median(timings[baseline]) / seconds:.1f}x",
                f"{100 * accuracy[i]['miou']:.2f}",
                f"{100 * (accuracy[i]['miou'] - accuracy[baseline]['miou']):+.2f}",
                f"{accuracy[i]['params'] / 1e6:.2f} M",
                f"{accuracy[i]['peak_bytes'] / 2**20:.0f}",
            ]
        )
    memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    val = f"the first {args.max_val_images}" if args.max_val_images else "all"
    print(
        f"{args.images} demo quadrats of {args.size}x{args.size} (generated), ViT-S/14 with RANDOM weights, cached features, "
        f"{args.steps} steps per accuracy run, validated on {val} val quadrats, step time the median of {args.repeats} runs of {args.timing_steps} steps, "
        f"train_blocks {args.train_blocks}, device {args.device}, {threads} threads, load average {os.getloadavg()[0]:.1f} at the end; calibration ViT-S/14 518² forward {calibration[0]:.2f} s at the start, "
        f"{calibration[1]:.2f} s at the end"
    )
    print(
        format_table(
            [
                "head",
                "loss" if args.table == "loss" else "config",
                "ms/step",
                "x first row",
                "val mIoU %",
                "vs first row (pts)",
                "params",
                memory,
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
