"""The finishing work of survey prediction (mask PNG, colonies, journal line) alone: photos per second on a thread,
on several threads and on worker processes, as `evaluate.survey.finishing_pool` runs it.

    python benchmarks/bench_finish.py --photos 8 --workers 2

Beside a GPU the model takes ~0.2 s per 1920² quadrat, so this work must keep up: on one core it takes 0.25-0.5 s
per photo. While GDAL's polygonize traced the colonies it held the GIL, so threads beyond one added little
throughput and worker processes were chosen; `evaluate.tracing` lets it go.
The predictions are fragmented class maps (random 40 px blocks of 17 classes, speckled: ~2,500 colonies per
photo, the pessimistic case, like bench_predict's random head) with random confidences, made once, seeded.
Each configuration runs the same photos through `evaluate.finish.finish_photo` with as many photos in hand as
workers; the first photo per worker (its start-up: a spawned process imports numpy, GDAL, shapely) is not timed.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from concurrent.futures import Executor, Future, ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

from common.processes import spawned_pool  # noqa: E402
from common.table import format_table  # noqa: E402
from evaluate.finish import Finished, finish_photo  # noqa: E402
from prepare.layout import png_palette  # noqa: E402

NUM_CLASSES = 17


def fragmented_prediction(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class map of random 40 px blocks, 2% of its pixels speckled with other classes, and a confidence map."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, (size // 40 + 1, size // 40 + 1), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((40, 40), dtype=np.uint8))[:size, :size].copy()
    speckle = rng.random(mask.shape) < 0.02
    mask[speckle] = rng.integers(0, NUM_CLASSES, int(speckle.sum()), dtype=np.uint8)
    return mask, rng.random(mask.shape, dtype=np.float32)


def run_through(
    pool: Executor, workers: int, predictions: list[tuple[np.ndarray, np.ndarray]], out: pathlib.Path
) -> float:
    """Seconds per photo for `predictions` through `pool`, `workers` photos in hand, after one warm-up per worker."""
    palette = png_palette([[i * 15 % 256, i * 40 % 256, i * 90 % 256] for i in range(NUM_CLASSES)])

    def submit(index: int, mask: np.ndarray, confidence: np.ndarray) -> Future[Finished]:
        return pool.submit(
            finish_photo,
            "bench",
            f"photo{index}",
            f"photo{index}|0|0",
            mask,
            confidence,
            {},
            out / f"{index}.png",
            palette,
        )

    for future in [submit(-1 - w, *predictions[0]) for w in range(workers)]:
        future.result()
    pending: deque[Future[Finished]] = deque()
    start = time.perf_counter()
    for index, (mask, confidence) in enumerate(predictions):
        while len(pending) >= workers:
            pending.popleft().result()
        pending.append(submit(index, mask, confidence))
    while pending:
        pending.popleft().result()
    return (time.perf_counter() - start) / len(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8, help="predictions finished per configuration")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="threads or processes")
    parser.add_argument("--size", type=int, default=1920)
    parser.add_argument("--repeats", type=int, default=3, help="passes per configuration (the median is shown)")
    args = parser.parse_args()
    if min(args.photos, args.workers, args.size, args.repeats) < 1:
        parser.error("--photos, --workers, --size and --repeats must be positive")
    predictions = [fragmented_prediction(args.size, seed) for seed in range(min(args.photos, 4))]
    predictions = [predictions[i % len(predictions)] for i in range(args.photos)]
    from evaluate.colonies import find_colonies

    colonies = statistics.median(len(find_colonies(*p)) for p in predictions[:4])
    configurations = {
        "1 thread (a CPU's)": lambda: (ThreadPoolExecutor(1), 1),
        f"{args.workers} threads": lambda: (ThreadPoolExecutor(args.workers), args.workers),
        f"{args.workers} processes (beside a GPU)": lambda: (spawned_pool(args.workers), args.workers),
    }
    seconds: dict[str, list[float]] = {name: [] for name in configurations}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so the machine's drift falls on every configuration alike
            for name, make in configurations.items():
                pool, workers = make()
                with pool:
                    seconds[name].append(run_through(pool, workers, predictions, pathlib.Path(tmp)))
    baseline = statistics.median(seconds["1 thread (a CPU's)"])
    rows = [
        [name, round(statistics.median(s), 3), ", ".join(f"{x:.3f}" for x in s), round(1 / statistics.median(s), 2),
         round(baseline / statistics.median(s), 2)]
        for name, s in seconds.items()
    ]  # fmt: skip
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}, {os.cpu_count()} CPUs; {args.photos} fragmented {args.size}x{args.size} predictions "
        f"(median {colonies:.0f} colonies each), {args.repeats} interleaved passes"
    )
    print(format_table(["finishing on", "s/photo (median)", "passes", "photos/s", "x 1 thread"], rows))


if __name__ == "__main__":
    main()
