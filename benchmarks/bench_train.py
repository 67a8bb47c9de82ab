"""Head training on cached features against the live backbone, feature extraction in bf16 and fp32, peak memory.

    python benchmarks/bench_train.py                      # CPU, modest sizes, a few minutes
    python benchmarks/bench_train.py --device cuda --images 64 --size 1024 --crop 448

On a synthetic prepared folder (colour-coded random blobs, so any backbone separates the classes),
with ViT-S/14 and RANDOM weights (no real weights can be downloaded here; speed does not depend
on them, and both paths see the same features, so their val mIoU must agree), it prints:

1. time per training epoch (every view of every training image once) with the feature cache and
   with the live backbone, for the linear and segformer heads, median of `--repeats` runs of
   `--epochs` epochs each, and the val mIoU both reach after the same number of steps;
2. feature extraction (filling the cache) in images/s, bf16 autocast against fp32;
3. peak memory of a cached training run (extraction + training + validation, in a fresh process)
   with `--images` and 4x as many training images.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from common.fileio import sha256_file  # noqa: E402
from common.table import format_table  # noqa: E402
from prepare.layout import ManifestEntry, image_relpath, mask_relpath, write_metadata  # noqa: E402
from prepare.mask_png import encode_mask_png, palette_bytes  # noqa: E402

CLASSES = ["Acropora", "Porites", "Pocillopora"]
PALETTE = [(230, 60, 60), (60, 60, 230), (230, 200, 40)]
BASE = np.array([[70, 150, 90], [200, 70, 60], [60, 80, 200], [190, 170, 60]], dtype=np.float64)


def synthetic_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Random elliptical 'colonies' of three classes on background, colour by class, with noise and texture."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(6, 12)):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 16, size // 5, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(1, 4)), -1)
    texture = cv2.GaussianBlur(rng.normal(0, 40, (size, size, 3)), (0, 0), 3)
    image = BASE[mask] + texture + rng.normal(0, 10, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_synthetic(root: Path, train: int, val: int, size: int, seed: int = 0) -> Path:
    """A prepared folder (the layout of prepare/layout.py) of synthetic images."""
    rng = np.random.default_rng(seed)
    entries = []
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            image, mask = synthetic_pair(rng, size)
            stem = f"synthetic_2024_{split}{i:04d}"
            image_rel, mask_rel = image_relpath(split, f"{stem}.jpg"), mask_relpath(split, stem)
            for rel in (image_rel, mask_rel):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            (root / mask_rel).write_bytes(encode_mask_png(mask, palette_bytes([(0, 0, 0), *PALETTE])))
            counts = np.bincount(mask.ravel(), minlength=4)
            entries.append(
                ManifestEntry(
                    sample_id=stem,
                    split=split,
                    image=image_rel,
                    mask=mask_rel,
                    width=size,
                    height=size,
                    source_image=stem,
                    image_sha256=sha256_file(root / image_rel),
                    mask_sha256=sha256_file(root / mask_rel),
                    source_key=stem,
                    palette_key="synthetic",
                    pixels={str(i): int(c) for i, c in enumerate(counts) if c},
                )
            )
    write_metadata(root, CLASSES, PALETTE, {"taxonomy": {"name": "synthetic"}, "ignore_index": 255}, entries)
    return root


def run_config(
    args: argparse.Namespace,
    work: Path,
    data: Path,
    name: str,
    head: str,
    cache: bool,
    steps: int,
    precision: str = "auto",
):
    from train.config import load_config

    return load_config(
        f"{head}.yaml",
        data_dir=str(data),
        runs_dir=str(work / "runs"),
        cache_dir=str(work / "cache"),
        name=name,
        backbone=args.backbone,
        crop=args.crop,
        views_per_image=args.views,
        batch_size=args.batch_size,
        steps=steps,
        warmup_steps=max(1, steps // 10),
        eval_every=steps,
        patience=0,
        device=args.device,
        workers=args.workers,
        seed=0,
        cache=cache,
        precision=precision,
        val_batch_size=args.batch_size,
        log_every=max(1, steps),
    )


def train_once(config) -> dict:
    from common.settings import load_settings
    from train.config import resolve_config
    from train.loop import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(resolve_config(config, load_settings()))


def bench_epochs(args: argparse.Namespace, work: Path, data: Path) -> list[list]:
    """Median seconds per epoch, cached and live, and the val mIoU after the same steps."""
    steps = args.epochs * max(1, args.images * args.views // args.batch_size)
    rows = []
    for head in args.heads:
        seconds: dict[bool, list[float]] = {True: [], False: []}
        miou: dict[bool, float] = {}
        extraction = 0.0
        for repeat in range(args.repeats):
            for cache in (True, False):
                summary = train_once(
                    run_config(args, work, data, f"{head}_{'cached' if cache else 'live'}_{repeat}", head, cache, steps)
                )
                seconds[cache].append(summary["train_seconds"] / args.epochs)
                miou[cache] = summary["last_miou"]
                if cache and repeat == 0:
                    extraction = summary["cache_seconds"]
        cached, live = statistics.median(seconds[True]), statistics.median(seconds[False])
        fastest = min(seconds[False]) / min(
            seconds[True]
        )  # shared machines: the least-disturbed runs, as timeit reports
        rows.append(
            [
                head,
                steps,
                f"{cached:.2f}",
                f"{live:.2f}",
                f"{live / cached:.1f}x",
                f"{fastest:.1f}x",
                f"{extraction:.1f}",
                f"{100 * miou[True]:.2f}",
                f"{100 * miou[False]:.2f}",
                f"{100 * abs(miou[True] - miou[False]):.2f}",
            ]
        )
        print(f"  {head}: cached {seconds[True]}, live {seconds[False]}", file=sys.stderr)
    return rows


def bench_extraction(args: argparse.Namespace, work: Path, data: Path) -> list[list]:
    """Images/s filling an empty cache, bf16 autocast against fp32 (median of the repeats)."""
    import torch

    from common.runtime import Runtime, autocast_dtype, resolve_device
    from models.backbones import build_backbone
    from models.heads import build_head
    from models.segmenter import Segmenter
    from train import feature_cache
    from train.data import bank_for, file_hashes, load_samples

    device = resolve_device(args.device)
    _, samples = load_samples(data)
    train = samples["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone(args.backbone, layers=4)
    segmenter = Segmenter(backbone, build_head("linear", backbone.embed_dim, 4, 4)).to(device).eval()
    banks = [bank_for(s, args.views, args.crop, (0.5, 1.0), 0) for s in train]
    jobs = [(s.image_path, s.mask_path, b) for s, b in zip(train, banks)]
    hashes = file_hashes(train)
    rows = []
    for label, dtype in (("bf16", autocast_dtype(device, "auto")), ("fp32", None)):
        if label == "bf16" and dtype is None:
            rows.append([label, "not supported on this device", "", ""])
            continue
        extract = feature_cache.make_extractor(segmenter.forward_features, Runtime(device, dtype))
        extract(
            torch.zeros(args.extract_batch_size, 3, args.crop, args.crop, dtype=torch.uint8)
        )  # warm-up (kernels, autotuning)
        times = []
        for repeat in range(args.repeats):
            cache = work / f"extract_{label}_{repeat}"
            root = feature_cache.backbone_dir(cache, backbone, label)
            entries = [
                feature_cache.cache_entry(root, cache / "labels", ih, mh, b, backbone.layers)
                for (ih, mh), b in zip(hashes, banks)
            ]
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            feature_cache.fill_cache(jobs, entries, extract, args.extract_batch_size, args.workers, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            shutil.rmtree(cache)
        median = statistics.median(times)
        rows.append([label, f"{len(train) / median:.2f}", f"{len(train) * args.views / median:.1f}", f"{median:.2f}"])
    return rows


def memory_probe(args: argparse.Namespace) -> None:
    """(child process) one cached segformer run; prints peak resident memory and, on CUDA, peak GPU memory."""
    import torch

    work = Path(args.work)
    data = write_synthetic(work / "data", args.images, 2, args.size)
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = max(1, args.images * args.views // args.batch_size)
    train_once(run_config(args, work, data, "memory", "segformer", True, steps))
    gpu = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available() and args.device.startswith("cuda")
        else 0.0
    )
    print(
        json.dumps(
            {
                "before_mb": before / 1024,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "gpu_mb": gpu,
            }
        )
    )


def bench_memory(args: argparse.Namespace, work: Path) -> list[list]:
    rows = []
    for images in (args.images, 4 * args.images):
        probe_dir = work / f"memory_{images}"
        command = [
            sys.executable,
            __file__,
            "--memory-probe",
            "--work",
            str(probe_dir),
            "--images",
            str(images),
            "--size",
            str(args.size),
            "--crop",
            str(args.crop),
            "--views",
            str(args.views),
            "--device",
            args.device,
            "--backbone",
            args.backbone,
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        probe = json.loads(out)
        rows.append(
            [
                images,
                images * args.views,
                f"{probe['peak_mb']:.0f}",
                f"{probe['gpu_mb']:.0f}" if probe["gpu_mb"] else "-",
            ]
        )
        shutil.rmtree(probe_dir)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--heads", default="linear,segformer", help="comma-separated heads")
    parser.add_argument("--images", type=int, default=8, help="training images (the memory test also uses 4x as many)")
    parser.add_argument("--val-images", type=int, default=2)
    parser.add_argument("--size", type=int, default=448, help="side of the square synthetic images")
    parser.add_argument("--crop", type=int, default=224, help="training crop (multiple of the patch)")
    parser.add_argument("--views", type=int, default=4, help="views per image (K)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--extract-batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run (the mIoU is compared after them)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: epochs, extraction, memory")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.heads = [h for h in args.heads.split(",") if h]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return
    skip = set(args.skip.split(","))
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# bench_train: {args.backbone} with RANDOM weights on {device}; {args.images} synthetic {args.size}x{args.size} "
        f"training images x {args.views} views of {args.crop}x{args.crop}, batch {args.batch_size}, median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        data = write_synthetic(work / "data", args.images, args.val_images, args.size)
        if "epochs" not in skip:
            rows = bench_epochs(args, work, data)
            print("\n## Seconds per training epoch, cached features vs live backbone (val mIoU after the same steps)\n")
            print(
                format_table(
                    [
                        "head",
                        "steps",
                        "cached s/epoch",
                        "live s/epoch",
                        "speed-up",
                        "speed-up (min/min)",
                        "extraction s (once)",
                        "mIoU cached",
                        "mIoU live",
                        "|diff| pts",
                    ],
                    rows,
                )
            )
        if "extraction" not in skip:
            print("\n## Feature extraction (filling the cache)\n")
            print(format_table(["precision", "images/s", "views/s", "seconds"], bench_extraction(args, work, data)))
        if "memory" not in skip:
            print("\n## Peak memory of a cached segformer run (fresh process: extraction, training, validation)\n")
            print(format_table(["train images", "views", "peak RSS MB", "peak GPU MB"], bench_memory(args, work)))


if __name__ == "__main__":
    main()
