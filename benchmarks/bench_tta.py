"""Test-time augmentation on whole quadrats: what each `--tta` / `--tta-scales` setting buys in mIoU and costs in time.

    python benchmarks/bench_tta.py                                   # CPU, 1920x1920 quadrats, about 20 minutes
    python benchmarks/bench_tta.py --size 960 --images 15 --steps 200 --test-images 1   # the quick look in benchmarks/README.md

The data and the head are `bench_windows.py`'s: the demo quadrats (`data_engineering.demo_data`), prepared with the
finegrained taxonomy, a linear head trained on cached ViT-S/14 features (RANDOM backbone weights: none can be
downloaded here). The held-out test quadrats are then predicted exactly as `evaluate` predicts them
(`evaluate.inference.predict_image`, the run's windows) under each augmentation: none, mirror, scales, scales and
mirror. For each: passes blended, coral mIoU, mIoU with background, pixels equal to the plain prediction, median
seconds per image and that time as a multiple of the plain one. A calibration forward (ViT-S/14 at 518², batch 1)
is measured in the same run, with the load average, since this shared CPU's speed varies from run to run.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.bench_windows import (  # noqa: E402
    Setting,
    add_quadrat_arguments,
    parse_with_threads,
    prepared_quadrats,
    score,
    scores,
    train_head,
)
from benchmarks.fixtures import calibration_forward  # noqa: E402
from common.table import format_table  # noqa: E402

SETTINGS = (  # (label, scales, mirror)
    ("none", (1.0,), False),
    ("--tta", (1.0,), True),
    ("--tta-scales 0.75,1,1.25", (0.75, 1.0, 1.25), False),
    ("--tta --tta-scales 0.75,1,1.25", (0.75, 1.0, 1.25), True),
    ("--tta --tta-scales 1,1.5", (1.0, 1.5), True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quadrat_arguments(parser)
    parser.add_argument("--steps", type=int, default=500, help="training steps of the head")
    parser.add_argument(
        "--crop",
        type=int,
        default=448,
        help="training crop (the default config's); the window is train's default, 392 px",
    )
    parser.add_argument("--test-images", type=int, default=0, help="predict only this many test quadrats (0: all)")
    args = parse_with_threads(parser)

    from models.sliding_window import TestTimeAugmentation

    load_before = os.getloadavg()[0]
    calibration = calibration_forward(torch.device("cpu"), 2)
    with tempfile.TemporaryDirectory(prefix="bench_tta_") as temporary:
        work = Path(args.work).expanduser() if args.work else Path(temporary)
        data = prepared_quadrats(work, args.images, args.size, args.colonies)
        settings = [Setting(label, tta=TestTimeAugmentation(scales, mirror)) for label, scales, mirror in SETTINGS]
        results = score(train_head(args, work, data, args.crop), data, settings, args.test_images)
    plain = results[0]
    rows = []
    for result in results:
        miou, miou_background, agreement, seconds = scores(result, plain)
        rows.append(
            [
                result["setting"].label,
                result["setting"].tta.passes,
                f"{miou:.2f}",
                f"{miou_background:.2f}",
                f"{agreement:.2f}",
                f"{seconds:.2f}",
                f"{seconds / statistics.median(plain['seconds']):.1f}",
            ]
        )
    print(
        f"{len(plain['seconds'])} test quadrats of {args.size}x{args.size}, linear head on ViT-S/14 (RANDOM weights), "
        f"{args.steps} steps at crop {args.crop}, CPU {args.threads} threads; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; calibration ViT-S/14 518² forward "
        + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items())
    )
    print(
        format_table(
            ["augmentation", "passes", "coral mIoU %", "mIoU with bg %", "pixels as plain %", "s/image", "x plain"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
