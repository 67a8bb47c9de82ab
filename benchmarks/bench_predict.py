"""Whole-survey prediction end to end (`evaluate/predict.py`): photos per second and where the time goes.

    python benchmarks/bench_predict.py --photos 24        # this CPU: ViT-S/14 + linear, + segformer, ViT-B/14 + segformer
    python benchmarks/bench_predict.py --device cuda --models dinov2_vits14:segformer,dinov2_vitb14:segformer --photos 64
    python benchmarks/bench_predict.py --models dinov2_vits14:linear --background-bias 0,8,12   # fewer colonies too

For each backbone and head, a run folder with RANDOM weights (none can be downloaded here; speed does
not depend on them, and the scaled-up random head fragments the prediction into many colonies: a
pessimistic case for post-processing, some 2,500 per quadrat; `--background-bias` adds to the background
logit so that fewer and smaller ones remain, as few as a real quadrat holds) predicts `--photos` demo
quadrats of 1920 x 1920 px (JPEG, 45 colonies drawn) from a temporary FiftyOne dataset, exactly as `predict.py` does: decoding on
DataLoader workers, sliding windows, mask PNG, colonies, journal, FiftyOne write, survey report.
Beside it, in the same process, the model's own sliding-window time on the same decoded photos is
measured (`evaluate.inference.predict_image` alone) before, between and after `--rounds` such passes. This
machine's speed drifts by 10-40% within minutes, so one pass against one timing proves little: each pass is
set against the mean of the timings either side of it, and the median over the passes is shown. The
end-to-end figure (decode, predict, colonies, PNG, journal, journals gathered, FiftyOne write, each photo's
cover and colony sizes) is given as a multiple of the model's, and as a multiple of one ViT-S/14 518² forward
(the calibration) measured in the same run.
What is done once per survey (the run's record and App set-up in FiftyOne, the tables and plots) is shown apart, and the whole command per photo (model loading and report included) last.
Memory: the process's resident set size is sampled while it predicts, and its peak is shown after each quarter
of the photos (it should stay flat: one photo's arrays at a time, only small summaries kept).
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import torch  # noqa: E402

from benchmarks.fixtures import calibration_forward, takes_background_bias, write_run  # noqa: E402
from common.table import format_table  # noqa: E402


def resident_mib() -> float:
    """This process's resident set size now (Linux /proc; the peak so far elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryWatch:
    """Samples the resident set size and the number of masks written so far, every `interval` seconds."""

    def __init__(self, masks: pathlib.Path, interval: float = 0.2) -> None:
        self.masks, self.interval = masks, interval
        self.samples: list[tuple[int, float]] = []  # (photos done, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            done = sum(1 for _ in os.scandir(self.masks)) if self.masks.is_dir() else 0
            self.samples.append((done, resident_mib()))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_until(self, photos: int) -> float:
        """The largest resident set size seen before more than `photos` photos were done."""
        return max((mib for done, mib in self.samples if done <= photos), default=float("nan"))


def model_seconds(
    run_dir: pathlib.Path, photos: list[pathlib.Path], device: str, precision: str, batch_size: int
) -> float:
    """Median seconds of the model's own sliding-window prediction per photo (decoded beforehand, not timed)."""
    from common.images import read_image
    from common.runtime import resolve_runtime
    from evaluate.inference import predict_image, window_forward
    from models.checkpoint import load_checkpoint

    runtime = resolve_runtime(device, precision)
    model, spec = load_checkpoint(run_dir)
    forward = window_forward(model.to(runtime.device).eval(), runtime, tta=False)
    images = [read_image(p, oriented=True) for p in photos]
    predict_image(
        forward, images[0], spec.num_classes, spec.window, spec.window_stride, batch_size, runtime.device
    )  # warm-up
    seconds = []
    for image in images:
        start = time.perf_counter()
        predict_image(forward, image, spec.num_classes, spec.window, spec.window_stride, batch_size, runtime.device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


class SurveyPass(NamedTuple):
    """One end-to-end pass of `predict_survey` over the photos, in a fresh FiftyOne dataset (nothing reused)."""

    report: dict[str, Any]
    per_photo: float  # the end-to-end seconds per photo the target is about (see the module)
    once: float  # seconds done once per survey: the run's record and App set-up, the report
    whole: float  # the whole command's seconds per photo
    memory: MemoryWatch
    colonies: float  # predicted colonies per photo
    cover: float  # percent of the pixels predicted as a genus, per photo


def predicted_content(quadrats_csv: pathlib.Path) -> tuple[float, float]:
    """Mean colonies and mean percent cover of all genera per photo, from the survey's `quadrats.csv`."""
    with open(quadrats_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    background = next(name for name in rows[0] if name.startswith("cover_"))  # class 0 comes first
    return (
        statistics.mean(int(row["colonies"]) for row in rows),
        statistics.mean(100 - float(row[background]) for row in rows),
    )


def survey_pass(
    settings: Any, run_dir: pathlib.Path, photos: list[pathlib.Path], args: argparse.Namespace
) -> SurveyPass:
    """Predict `photos` with the run as `predict.py` does, into a dataset made for this pass and deleted after it."""
    import fiftyone as fo

    from evaluate.survey import MEASURE, REPORT, SETUP, WRITE, PredictOptions, predict_survey

    dataset = fo.Dataset(f"bench_predict_{uuid.uuid4().hex[:8]}")
    try:
        dataset.add_samples([fo.Sample(filepath=str(p)) for p in photos])
        options = PredictOptions(
            run_dir=run_dir,
            dataset=dataset.name,
            precision=args.precision,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        start = time.perf_counter()
        with MemoryWatch(run_dir / "predict" / dataset.name / "masks") as memory:
            report = predict_survey(settings, options, out=io.StringIO())
        whole = (time.perf_counter() - start) / len(photos)
    finally:
        dataset.delete()
    parts = report["parts"]
    per_photo = (report["seconds"] + parts[WRITE] + parts[MEASURE]) / len(photos)
    colonies, cover = predicted_content(pathlib.Path(report["out_dir"]) / "quadrats.csv")
    return SurveyPass(report, per_photo, parts[SETUP] + parts[REPORT], whole, memory, colonies, cover)


def check_configurations(
    parser: argparse.ArgumentParser, models: str, background_bias: str
) -> tuple[list[tuple[str, str]], list[float]]:
    """The backbone:head pairs and background biases asked for, refused in one line before any work when wrong."""
    from models.backbones import BACKBONES
    from models.heads import HEADS

    pairs = [(backbone, head) for backbone, _, head in (pair.partition(":") for pair in models.split(","))]
    unknown = [f"{b}:{h}" for b, h in pairs if b not in BACKBONES or h not in HEADS]
    if unknown:
        parser.error(
            f"--models: {', '.join(unknown)} unknown; backbones are {', '.join(BACKBONES)}, heads {', '.join(HEADS)}"
        )
    try:
        biases = [float(value) for value in background_bias.split(",")]
    except ValueError:
        parser.error(f"--background-bias takes comma-separated numbers, not {background_bias!r}")
    if not all(math.isfinite(b) for b in biases) or len(set(biases)) < len(biases):
        parser.error(f"--background-bias takes distinct finite numbers, not {background_bias!r}")
    if any(biases):
        without = sorted({h for _, h in pairs if not takes_background_bias(h)})
        if without:
            parser.error(f"--background-bias needs heads with a per-pixel classifier; {', '.join(without)} has none")
    return pairs, biases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--models",
        default="dinov2_vits14:linear,dinov2_vits14:segformer,dinov2_vitb14:segformer",
        help="comma-separated backbone:head pairs",
    )
    parser.add_argument("--photos", type=int, default=4, help="quadrats predicted per pass")
    parser.add_argument(
        "--model-photos", type=int, default=4, help="of those, how many time the model alone (the median is used)"
    )
    parser.add_argument("--size", type=int, default=1920)
    parser.add_argument(
        "--window",
        type=int,
        default=392,
        help="the run's window and stride (392: the default config's on /14 backbones)",
    )
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes decoding photos")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--rounds", type=int, default=3, help="end-to-end passes, the model alone timed before, between and after them"
    )
    parser.add_argument(
        "--background-bias",
        default="0",
        help="comma-separated values added to the head's background logit, each timed apart (0: ~2,500 colonies "
        "per quadrat; 8: ~400; 12: ~100 with ViT-S/14 + linear)",
    )
    args = parser.parse_args()
    pairs, biases = check_configurations(parser, args.models, args.background_bias)
    if min(args.photos, args.model_photos, args.rounds, args.threads, args.size) < 1 or args.workers < 0:
        parser.error(
            "--photos, --model-photos, --rounds, --threads and --size must be at least 1, --workers at least 0"
        )
    torch.set_num_threads(args.threads)

    from common.runtime import resolve_device, resolve_runtime
    from common.settings import load_settings
    from data_engineering.demo_data import make_demo_photos

    device = resolve_device(args.device)
    load_before = os.getloadavg()
    calibration = calibration_forward(device)
    print(
        "calibration, ViT-S/14 forward at 518², batch 1: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items()),
        file=sys.stderr,
        flush=True,
    )
    reference = calibration.get("bf16", calibration["fp32"])
    precision = resolve_runtime(args.device, args.precision).precision
    rows, parts_rows, memory_rows = [], [], []
    checkpoints = sorted({max(1, args.photos * k // 4) for k in (1, 2, 3, 4)})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = make_demo_photos(pathlib.Path(tmp) / "photos", args.photos, args.size, 45, seed=7)
        photos = sorted(folder.glob("*.jpg"))
        settings = load_settings(device=args.device, workers=args.workers)
        for (backbone, head), bias in itertools.product(pairs, biases):
            name = f"{backbone} + {head}" + (f", background {bias:+g}" if bias else "")
            run_dir = pathlib.Path(tmp) / "runs" / f"bench-{backbone}-{head}-{biases.index(bias)}"
            write_run(run_dir, backbone, args.window, head, bias)
            model_args = (run_dir, photos[: args.model_photos], args.device, args.precision, args.batch_size)
            models = [model_seconds(*model_args)]  # between every pass: this machine's speed drifts within minutes
            passes = []
            for _ in range(args.rounds):
                passes.append(survey_pass(settings, run_dir, photos, args))
                models.append(model_seconds(*model_args))
            ratios = [one.per_photo / ((models[k] + models[k + 1]) / 2) for k, one in enumerate(passes)]
            per_photo = statistics.median(one.per_photo for one in passes)
            memory_rows.append([name, *(round(max(one.memory.peak_until(n) for one in passes)) for n in checkpoints)])
            rows.append(
                [
                    name,
                    precision,
                    f"{statistics.median(one.colonies for one in passes):.0f} ({statistics.median(one.cover for one in passes):.1f}%)",
                    f"{statistics.median(models):.2f} ({', '.join(f'{m:.2f}' for m in models)})",
                    f"{per_photo:.2f} ({', '.join(f'{one.per_photo:.2f}' for one in passes)})",
                    f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})",
                    round(1 / per_photo, 3),
                    round(per_photo / reference, 1),
                    round(statistics.median(one.once for one in passes), 1),
                    round(statistics.median(one.whole for one in passes), 2),
                ]
            )
            parts: dict[str, float] = {}
            for one in passes:
                for part, seconds in one.report["parts"].items():
                    parts[part] = parts.get(part, 0.0) + seconds / (args.photos * len(passes))
            total = sum(parts.values())
            parts_rows += [[name, part, round(seconds, 3), f"{seconds / total:.0%}"] for part, seconds in parts.items()]
            print(  # each configuration as soon as it is measured, so a long run loses nothing when stopped
                f"  measured {rows[-1]}, parts {parts_rows[-len(parts) :]}, memory {memory_rows[-1]}, "
                f"load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
    load_after = os.getloadavg()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average "
        f"(1, 5, 15 min) {', '.join(f'{v:.1f}' for v in load_before)} before, {', '.join(f'{v:.1f}' for v in load_after)} after"
    )
    print(
        f"{args.photos} demo quadrats of {args.size}x{args.size} px, windows {args.window} px, batch {args.batch_size}, "
        f"{device.type}, {args.threads} threads, {args.workers} decoding worker(s); {args.rounds} end-to-end pass(es); model = sliding windows alone on {min(args.model_photos, args.photos)} of the same photos (median), before, between and after the passes; each pass's ratio to the mean of the model timings either side of it, the median over passes shown first"
    )
    print(
        format_table(
            [
                "model",
                "precision",
                "colonies/photo (genus cover)",
                "model s/photo (each timing)",
                "end-to-end s/photo (each pass)",
                "end-to-end / model (each pass)",
                "photos/s",
                "end-to-end in calibrations",
                "once per survey s (FiftyOne set-up, report)",
                "command s/photo",
            ],
            rows,
        )
    )
    print()
    print(format_table(["model", "part", "s/photo", "share"], parts_rows))
    print()
    print("peak resident memory of the predicting process (MiB), by photos done:")
    print(format_table(["model", *(f"after {n}" for n in checkpoints)], memory_rows))
    print(
        "calibration, ViT-S/14 forward at 518², batch 1: " + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items())
    )


if __name__ == "__main__":
    main()
