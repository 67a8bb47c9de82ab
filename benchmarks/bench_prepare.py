"""Benchmark: polygons in FiftyOne -> PNG masks on disk, ours against FiftyOne's `objects_to_segmentations`.

Both run end to end on the same samples of the synthetic 1920x1920 demo data (~45 colonies per
image): read the polygons from the dataset, rasterize, write one PNG per image. Each measurement
runs in a fresh process, so its peak memory is its own; ours is also run on half the images to
show that peak memory does not grow with their number (memory is sampled over the whole process
tree, workers included).

    python benchmarks/bench_prepare.py [--num-images 128 --size 1920 --colonies 45 --runs 3 --workers 1,2]
"""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from common.cli import run  # noqa: E402
from common.settings import REPO_ROOT, load_settings  # noqa: E402
from common.table import format_table  # noqa: E402
from data_engineering.dataset_contract import GT_FIELD  # noqa: E402


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (worker processes included), in MiB."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


class PeakMemory(threading.Thread):
    """Samples the resident memory of this process tree every 20 ms (ru_maxrss would include the parent's
    size, which Linux carries across fork and exec, and would miss the sum over worker processes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _tree_rss_mib(os.getpid()))
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak


def measure(method: str, dataset_name: str, output_dir: str, limit: int, workers: int = 1) -> None:
    """One timed run in this process; prints a JSON line (used by the benchmark through a subprocess)."""
    import fiftyone as fo
    import fiftyone.utils.labels as foul

    from prepare import fiftyone_source
    from prepare.pipeline import PrepareOptions, prepare_dataset
    from prepare.taxonomy import load_taxonomy

    dataset = fo.load_dataset(dataset_name)
    view = dataset.limit(limit)
    output = Path(output_dir)
    shutil.rmtree(output, ignore_errors=True)
    baseline = _tree_rss_mib(os.getpid())
    sampler = PeakMemory()
    sampler.start()
    cpu_before = os.times()
    start = time.perf_counter()  # imports done: both methods are timed from the dataset to PNGs on disk
    if method == "fiftyone":
        labels = sorted(set(dataset.distinct(f"{GT_FIELD}.polylines.label")))
        foul.objects_to_segmentations(
            view,
            GT_FIELD,
            "fo_segmentation",
            mask_targets={i: label for i, label in enumerate(labels, 1)},
            output_dir=str(output),
            overwrite=True,
            progress=False,
        )
    else:
        options = PrepareOptions(
            taxonomy=load_taxonomy("finegrained"),
            output_dir=output,
            source=fiftyone_source.describe(dataset, GT_FIELD),
            unknown="other",
            workers=workers,
        )
        report = prepare_dataset(
            fiftyone_source.read_records(view, GT_FIELD), fiftyone_source.annotation_reader(view, GT_FIELD), options
        )
        assert report.written == limit, f"wrote {report.written} masks of {limit}"
    seconds = time.perf_counter() - start
    cpu_after = os.times()
    cpu = sum(
        getattr(cpu_after, k) - getattr(cpu_before, k) for k in ("user", "system", "children_user", "children_system")
    )
    peak = sampler.stop()
    written = len(list(output.rglob("*.png")))
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "masks": written, "baseline_mib": baseline, "peak_mib": peak}
        )
    )


def _demo_dataset(num_images: int, size: int, colonies: int, data_dir: Path) -> str:
    """The demo export (cached in data_dir) imported into a fresh FiftyOne dataset, with metadata computed."""
    import fiftyone as fo

    from data_engineering.demo_data import make_demo_export
    from data_engineering.import_export import import_cvat_export

    export = make_demo_export(data_dir / f"export_{size}_{colonies}", num_images, size, colonies)
    name = f"bench_prepare_{size}_{colonies}_{num_images}"
    settings = load_settings(media_dir=str(data_dir / "media"))
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    import_cvat_export(export, name, settings, overwrite=True)
    dataset = fo.load_dataset(name)
    dataset.compute_metadata()
    return name


def _timed_run(method: str, dataset_name: str, output: Path, limit: int, workers: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "measure",
        method,
        dataset_name,
        str(output),
        str(limit),
        f"--workers={workers}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _processes(workers: int, images: int) -> str:
    """How many worker processes prepare_dataset really starts for this many images (none: it draws in-process)."""
    from prepare.pipeline import IMAGES_PER_WORKER

    used = min(workers, images // IMAGES_PER_WORKER)
    return f" ({used} processes)" if used > 1 else " (in-process)"


def benchmark(
    num_images: int = 128,
    size: int = 1920,
    colonies: int = 45,
    runs: int = 3,
    workers: str | int | tuple = "1,2",
    keep: bool = False,
) -> None:
    """Time FiftyOne's objects_to_segmentations and prepare_dataset on the same samples; print a table.

    Args:
        num_images: demo images (generated once, ~2 s each at 1920 px, cached in benchmarks/out/prepare).
        size: image side in pixels.
        colonies: colonies per image at the first survey.
        runs: timed runs per method (the median is reported).
        workers: worker process counts to try for ours, e.g. 1,2.
        keep: keep the FiftyOne dataset afterwards.
    """
    import fiftyone as fo

    worker_counts = [int(w) for w in (str(workers).split(",") if isinstance(workers, (str, int)) else workers)]
    data_dir = REPO_ROOT / "benchmarks" / "out" / "prepare"
    name = _demo_dataset(num_images, size, colonies, data_dir)
    dataset = fo.load_dataset(name)
    polygons = dataset.count(f"{GT_FIELD}.polylines")
    cases = [("fiftyone objects_to_segmentations", "fiftyone", num_images, 1)]
    cases += [
        (f"reefseg prepare, --workers {w}{_processes(w, num_images)}", "ours", num_images, w) for w in worker_counts
    ]
    cases += [
        (
            f"reefseg prepare, --workers {worker_counts[0]}{_processes(worker_counts[0], num_images // 2)}, half the images",
            "ours",
            num_images // 2,
            worker_counts[0],
        )
    ]
    timings: dict[str, list[dict]] = {label: [] for label, *_ in cases}
    for _ in range(runs):
        for label, method, limit, w in cases:
            timings[label].append(_timed_run(method, name, data_dir / "masks" / method, limit, w))
    rows = []
    fiftyone_rate = fiftyone_cpu = None
    for label, _method, limit, _workers in cases:
        seconds = statistics.median(t["seconds"] for t in timings[label])
        cpu = statistics.median(t["cpu_seconds"] for t in timings[label])
        rate = limit / seconds
        fiftyone_rate = fiftyone_rate or rate
        fiftyone_cpu = fiftyone_cpu or cpu
        peak = max(t["peak_mib"] for t in timings[label])
        growth = max(t["peak_mib"] - t["baseline_mib"] for t in timings[label])
        rows.append(
            [
                label,
                limit,
                seconds,
                rate,
                rate / fiftyone_rate,
                cpu,
                fiftyone_cpu / cpu * limit / num_images,
                peak,
                growth,
            ]
        )
    print(
        f"\n{num_images} images of {size}x{size}, {polygons} polygons ({polygons / num_images:.1f} per image), median of {runs} runs\n"
    )
    print(
        format_table(
            [
                "method",
                "images",
                "seconds",
                "masks/s",
                "x fiftyone",
                "cpu s",
                "x fiftyone cpu/mask",
                "peak MiB",
                "peak - before MiB",
            ],
            rows,
        )
    )
    print(
        "\nseconds: wall clock, from the dataset to PNG files on disk; cpu s: CPU time of the process and its workers (the MongoDB "
        "server's excluded for both); peak MiB: resident memory of the process and its workers, FiftyOne loaded; "
        "peak - before: what the run itself added"
    )
    if not keep:
        fo.delete_dataset(name)


def main() -> None:
    run({"benchmark": benchmark, "measure": measure} if len(sys.argv) > 1 and sys.argv[1] == "measure" else benchmark)


if __name__ == "__main__":
    main()
