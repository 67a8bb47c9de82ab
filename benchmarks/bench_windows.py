"""Sliding-window settings for whole quadrats: accuracy and seconds per image, side by side.

    python benchmarks/bench_windows.py                    # CPU, 1920x1920 quadrats, about 10 minutes
    python benchmarks/bench_windows.py --size 960 --images 15 --steps 200   # a quick look

Fewer, smaller windows are faster; this checks what they cost in accuracy. It generates the demo
quadrats (genus-specific shapes and textures, `data_engineering.demo_data`) at the users' size,
prepares them with the finegrained taxonomy (`prepare.pipeline`, no FiftyOne needed), trains a
linear head on cached features of ViT-S/14 for each training crop (`train.loop`, RANDOM backbone
weights: none can be downloaded here, and every setting sees the same features), then predicts the
held-out test quadrats with each window setting exactly as `evaluate` does (`evaluate.inference`):
windows of the training crop two thirds of a window apart (the densest), the same windows at
most a window apart (the fewest, evenly spread: train's default step), and each other crop's
fewest windows (a window size unlike the training crop). For each setting: windows per image,
mIoU over coral classes and with background, pixel agreement with the densest setting of the
same head, and the median seconds per image.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.fixtures import calibration_forward  # noqa: E402
from common.table import format_table  # noqa: E402

SPLIT_OF_SUBSET = {"Train": "train", "Validation": "val", "Test": "test"}


def prepared_quadrats(work: Path, images: int, size: int, colonies: int) -> Path:
    """The demo export at `size`, prepared with the finegrained taxonomy (reused when already there)."""
    from data_engineering.demo_data import make_demo_export
    from data_engineering.import_export import parse_annotations
    from prepare.pipeline import Annotation, PrepareOptions, SampleRecord, prepare_dataset
    from prepare.taxonomy import load_taxonomy

    export = make_demo_export(work / f"export_{size}_{colonies}", images, size, colonies, seed=0)
    with open(export / "annotations.xml", "rb") as stream:
        parsed = parse_annotations(stream, "bench_windows")
    records, shapes = [], {}
    for image in parsed.images:
        scale = np.array([image.width, image.height], dtype=np.float64)
        records.append(
            SampleRecord(
                sample_id=image.name,
                filepath=str(export / "images" / str(image.subset) / image.name),
                width=image.width,
                height=image.height,
                tags=(SPLIT_OF_SUBSET[str(image.subset)],),
                labels=tuple(s.label for s in image.shapes),
            )
        )
        shapes[image.name] = [
            Annotation(s.label, (np.asarray(s.points, dtype=np.float64).reshape(-1, 2) / scale,), s.z_order)
            for s in image.shapes
        ]
    output = work / f"prepared_{size}_{colonies}_{images}"
    prepare_dataset(
        records,
        lambda ids: ((i, shapes[i]) for i in ids),
        PrepareOptions(taxonomy=load_taxonomy("finegrained"), output_dir=output, source={"dataset": "bench_windows"}),
    )
    return output


def train_head(args: argparse.Namespace, work: Path, data: Path, crop: int) -> Path:
    """A run folder holding a linear head trained at `crop` (validated once, at the end)."""
    from common.settings import load_settings
    from train.config import load_config, resolve_config
    from train.loop import train

    name = f"linear_crop{crop}_{data.name}_{args.steps}"
    config = load_config(
        "linear.yaml",
        data_dir=str(data),
        runs_dir=str(work / "runs"),
        cache_dir=str(work / "cache"),
        name=name,
        crop=crop,
        steps=args.steps,
        eval_every=args.steps,
        patience=0,
        device="cpu",
        workers=0,
        seed=0,
        resume=(work / "runs" / name / "config.yaml").is_file(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(resolve_config(config, load_settings()))
    print(f"  trained at crop {crop}: val mIoU {summary.get('best_miou')}", file=sys.stderr, flush=True)
    return work / "runs" / name


@dataclass(frozen=True)
class Setting:
    """One way of predicting the test quadrats: windows (0: the run's own) and test-time augmentation."""

    label: str
    window: int = 0
    stride: int = 0
    tta: Any = None  # models.sliding_window.TestTimeAugmentation, or None for a plain pass


def score(run_dir: Path, data: Path, settings: list[Setting], test_images: int = 0) -> list[dict]:
    """Every setting on every test quadrat (the first `test_images`, 0: all): confusion matrix, masks, seconds."""
    from common.images import read_image
    from common.runtime import resolve_runtime
    from evaluate.inference import predict_image, window_forward
    from models.checkpoint import load_checkpoint
    from models.metrics import confusion_matrix
    from models.sliding_window import NO_TTA, window_starts
    from prepare.layout import load_prepared
    from prepare.mask_png import read_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, spec = load_checkpoint(run_dir)
    runtime = resolve_runtime("cpu", "auto")
    forward = window_forward(model.to(runtime.device).eval(), runtime, tta=False)
    prepared = load_prepared(data)
    tests = [e for e in prepared.entries if e.split == "test"]
    tests = tests[:test_images] if test_images else tests
    height, width = tests[0].height, tests[0].width  # the quadrats all have the size they were generated at
    results = []
    for setting in settings:
        window, stride = setting.window or spec.window, setting.stride or spec.window_stride
        windows = len(window_starts(height, window, stride)) * len(window_starts(width, window, stride))
        results.append(
            {"setting": setting, "window": window, "stride": stride, "windows": windows}
            | {"matrix": 0, "seconds": [], "masks": []}
        )
    for entry in tests:
        image, truth = read_image(prepared.image_path(entry)), read_mask(prepared.mask_path(entry))
        for result in results:
            start = time.perf_counter()
            predicted = predict_image(
                forward,
                image,
                len(spec.classes),
                result["window"],
                result["stride"],
                8,
                runtime.device,
                result["setting"].tta or NO_TTA,
            ).mask
            result["seconds"].append(time.perf_counter() - start)
            result["matrix"] = result["matrix"] + confusion_matrix(truth, predicted, len(spec.classes))
            result["masks"].append(predicted)
            print(
                f"  {entry.image}: {result['setting'].label} {result['seconds'][-1]:.1f} s", file=sys.stderr, flush=True
            )
    return results


def scores(result: dict, reference: dict) -> tuple[float, float, float, float]:
    """Coral mIoU %, mIoU with background %, pixels equal to the reference's masks %, median seconds per image."""
    from models.metrics import compute_metrics

    metrics = compute_metrics(result["matrix"], [str(i) for i in range(len(result["matrix"]))], background_index=0)
    agreement = np.mean([np.mean(a == b) for a, b in zip(result["masks"], reference["masks"])])
    return 100 * metrics.miou, 100 * metrics.miou_with_background, 100 * agreement, statistics.median(result["seconds"])


def add_quadrat_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo quadrats every accuracy benchmark generates: their size, number and colonies."""
    parser.add_argument("--size", type=int, default=1920, help="side of the square quadrats")
    parser.add_argument("--images", type=int, default=30, help="demo quadrats (18 train, 6 val, 6 test of 30)")
    parser.add_argument("--colonies", type=int, default=45, help="colonies per quadrat at the first survey")


def parse_with_threads(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """`--threads` and `--work` added, the arguments parsed, torch's CPU threads set."""
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument(
        "--work", default="", help="keep data, caches and runs here (reruns reuse them); default: a temporary folder"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quadrat_arguments(parser)
    parser.add_argument("--steps", type=int, default=500, help="training steps of each head")
    parser.add_argument(
        "--crops", type=int, nargs="+", default=[448, 392], help="training crops; each is scored at 2/3 and full stride"
    )
    args = parse_with_threads(parser)

    load_before = os.getloadavg()[0]
    calibration = calibration_forward(torch.device("cpu"), 2)
    with tempfile.TemporaryDirectory(prefix="bench_windows_") as temporary:
        work = Path(args.work).expanduser() if args.work else Path(temporary)
        data = prepared_quadrats(work, args.images, args.size, args.colonies)
        rows = []
        for crop in args.crops:
            run_dir = train_head(args, work, data, crop)
            others = [c for c in args.crops if c != crop]
            settings = [Setting(f"{crop}/{s}", crop, s) for s in (max(1, crop * 2 // 3), crop)]
            results = score(run_dir, data, settings + [Setting(f"{c}/{c}", c, c) for c in others])
            for result in results:
                miou, miou_background, agreement, seconds = scores(result, results[0])
                rows.append(
                    [
                        crop,
                        f"{result['windows']} x {result['window']} px, stride {result['stride']}",
                        f"{miou:.2f}",
                        f"{miou_background:.2f}",
                        f"{agreement:.2f}",
                        f"{seconds:.2f}",
                    ]
                )
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    tests = len(results[0]["seconds"])
    print(
        f"{tests} test quadrats of {args.size}x{args.size}, linear head on ViT-S/14 (random weights), {args.steps} steps, bf16, "
        f"CPU {args.threads} threads; seconds: median over the test quadrats; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; calibration ViT-S/14 518² forward "
        + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items())
    )
    print(
        format_table(
            [
                "trained at crop",
                "windows per image",
                "coral mIoU %",
                "mIoU with bg %",
                "pixels as densest %",
                "s/image",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
