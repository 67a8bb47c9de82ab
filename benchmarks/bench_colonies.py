"""Colonies of one 1920² prediction (`evaluate.colonies.find_colonies`), against another checkout's, side by side.

    python benchmarks/bench_colonies.py                                  # this checkout alone
    git worktree add /tmp/base <commit> && python benchmarks/bench_colonies.py --baseline /tmp/base

Tracing is the largest part of a photo's work after the model (benchmarks/README.md), and its cost depends on
the prediction's shape, so four kinds are timed, made once, seeded: smooth regions (few and many colonies, like a
trained model's), the same speckled with 0.5% stray pixels (a poor model's noise: thousands of one-pixel holes),
and random 40 px blocks of 17 classes speckled with 2% (bench_finish's pessimistic case). With `--baseline`, that
checkout's `evaluate/colonies.py` is loaded beside this one's and both are run interleaved, `--repeats` times each,
on the same arrays; both must find the same colonies, outline for outline, or the benchmark stops. Beside each
call a second thread sleeps 0.5 ms at a time, and how much longer it waited, in waits of over 2 ms, is shown as the
GIL held: what the model's thread loses when `predict.py` finds colonies beside it. One ViT-S/14 518² forward
(the calibration) is measured in the same run.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from benchmarks.bench_finish import fragmented_prediction  # noqa: E402
from common.table import format_table  # noqa: E402
from evaluate import colonies as this_colonies  # noqa: E402


def smooth_prediction(size: int, blur: float, speckle: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurred noise cut into background (half the area) and 5 classes, `speckle` of its pixels set to background."""
    rng = np.random.default_rng(seed)
    noise = scipy.ndimage.gaussian_filter(rng.random((size, size)), blur)
    mask = np.digitize(noise, np.quantile(noise, [0.5, 0.6, 0.7, 0.8, 0.9])).astype(np.uint8)
    mask[rng.random(mask.shape) < speckle] = 0
    return mask, rng.random(mask.shape, dtype=np.float32)


def load_baseline(checkout: pathlib.Path) -> ModuleType:
    """Another checkout's `evaluate/colonies.py`, with the project modules it imports (`evaluate.tracing`) taken from
    that checkout too; this checkout's modules are put back afterwards."""
    if not (checkout / "evaluate" / "colonies.py").is_file():
        raise SystemExit(f"{checkout} is not the root of a checkout of this project (no evaluate/colonies.py).")

    def ours(name: str) -> bool:
        return name.partition(".")[0] in ("evaluate", "common", "prepare")

    mine = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module("evaluate.colonies")
    finally:
        sys.path.remove(str(checkout))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(mine)


def same_colonies(a: list, b: list) -> bool:
    """Whether two lists of colonies hold the same ones (order aside), outline coordinate for coordinate."""

    def key(colony: object) -> tuple:
        return (colony.class_index, colony.polygon.wkb, colony.area, colony.confidence)  # type: ignore[attr-defined]

    return sorted(map(key, a)) == sorted(map(key, b))


def timed(function: Callable[..., object], *arguments: object) -> tuple[float, float]:
    """Seconds one call of `function(*arguments)` took, and the seconds it kept a sleeping thread waiting."""
    nap, stop, late = 0.0005, threading.Event(), []

    def sleeper() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            time.sleep(nap)
            late.append(time.perf_counter() - start - nap)

    thread = threading.Thread(target=sleeper)
    thread.start()
    start = time.perf_counter()
    function(*arguments)
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    return seconds, sum(wait for wait in late if wait > 0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=pathlib.Path, help="root of another checkout to compare with")
    parser.add_argument("--size", type=int, default=1920)
    parser.add_argument("--repeats", type=int, default=9, help="timings per kind and checkout (the median is shown)")
    args = parser.parse_args()
    if min(args.size, args.repeats) < 1:
        parser.error("--size and --repeats must be positive")
    baseline = load_baseline(args.baseline) if args.baseline else None
    import torch

    from benchmarks.fixtures import calibration_forward

    calibration = calibration_forward(torch.device("cpu"))
    kinds = {
        "smooth, few colonies": smooth_prediction(args.size, 40, 0.0, 0),
        "smooth, many colonies": smooth_prediction(args.size, 12, 0.0, 1),
        "smooth, many, 0.5% speckle": smooth_prediction(args.size, 12, 0.005, 1),
        "blocks, 2% speckle": fragmented_prediction(args.size, 0),
    }
    rows = []
    for name, (mask, confidence) in kinds.items():
        found = this_colonies.find_colonies(mask, confidence)  # also the warm-up
        if baseline is not None and not same_colonies(found, baseline.find_colonies(mask, confidence)):
            raise SystemExit(f"{name}: the two checkouts find different colonies, so their times do not compare.")
        mine, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so the machine's drift falls on both alike
            mine.append(timed(this_colonies.find_colonies, mask, confidence))
            if baseline is not None:
                theirs.append(timed(baseline.find_colonies, mask, confidence))
        seconds, held = (statistics.median(t[k] for t in mine) for k in (0, 1))
        row = [name, len(found), round(seconds, 3), round(held, 3)]
        if baseline is not None:
            their_seconds, their_held = (statistics.median(t[k] for t in theirs) for k in (0, 1))
            row += [round(their_seconds, 3), round(their_held, 3), round(their_seconds / seconds, 2)]
        rows.append(row)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    reference = ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items())
    print(f"{now}, {os.cpu_count()} CPUs, {args.size}² predictions, {args.repeats} interleaved timings each")
    print(f"calibration, ViT-S/14 forward at 518², batch 1: {reference}")
    header = ["prediction", "colonies", "this checkout s", "GIL held s"]
    if baseline is not None:
        header += [f"baseline s ({args.baseline})", "baseline GIL held s", "baseline / this"]
    print(format_table(header, rows))


if __name__ == "__main__":
    main()
