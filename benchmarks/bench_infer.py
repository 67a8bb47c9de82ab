"""Seconds per 1920x1920 quadrat for whole-image prediction, and peak memory over a stream of images.

    python benchmarks/bench_infer.py                         # this CPU: ViT-S/14 + linear and + segformer
    python benchmarks/bench_infer.py --device cuda --backbone dinov2_vitb14 --batch-size 16
    python benchmarks/bench_infer.py --windows 392/392 644/644   # other window settings (crop/largest step)

The model is the one `evaluate` runs (`models.segmenter.Segmenter` under `evaluate.inference`:
sliding windows, logits blended, softmax, argmax), with RANDOM backbone weights (none can be
downloaded here; speed does not depend on them). For each head it times fp32 against bf16
autocast, and windows batched against one window at a time, for each window setting (the default
of a run trained with the default config, and the former default as the baseline): median of
`--repeats` runs after one warm-up. Then the post-processing `evaluate` adds per image (colonies, palette PNG), and the peak
memory of predicting a stream of 1 and of `--stream` images in fresh processes (flat = streaming).
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.table import format_table  # noqa: E402

NUM_CLASSES = 17  # finegrained: 16 genera + background


def build_model(backbone_name: str, head_name: str) -> torch.nn.Module:
    from models.backbones import build_backbone
    from models.heads import build_head
    from models.segmenter import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone(backbone_name, layers=None if head_name == "linear" else 4)
    head = build_head(head_name, backbone.embed_dim, len(backbone.layers), NUM_CLASSES)
    return Segmenter(backbone, head).eval()


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size // 32 + 1, size // 32 + 1, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((32, 32, 1), dtype=np.uint8))[:size, :size]


def time_prediction(
    model, image, device, bf16: bool, batch_sizes: list[int], crop: int, stride: int, repeats: int
) -> list[float]:
    """Median seconds of `predict_image` per batch size, the sizes interleaved in each repeat (after one warm-up)
    so that a change in the machine's load hits them alike."""
    from common.runtime import Runtime
    from evaluate.inference import predict_image, window_forward

    forward = window_forward(model, Runtime(device, torch.bfloat16 if bf16 else None), tta=False)
    seconds: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for run in range(repeats + 1):
        for batch_size in batch_sizes:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            predict_image(forward, image, NUM_CLASSES, crop, stride, batch_size, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if run:
                seconds[batch_size].append(time.perf_counter() - start)
    return [statistics.median(seconds[b]) for b in batch_sizes]


def time_postprocessing(image_size: int, repeats: int) -> float:
    """Colonies (connected regions, polygons, confidence) and the palette PNG of one predicted mask."""
    from evaluate.colonies import find_colonies
    from prepare.mask_png import encode_mask_png, palette_bytes

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, NUM_CLASSES, (image_size // 48 + 1, image_size // 48 + 1), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((48, 48), dtype=np.uint8))[:image_size, :image_size]
    confidence = rng.random(mask.shape, dtype=np.float32)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        find_colonies(mask, confidence)
        encode_mask_png(mask, palette_bytes([[i * 15, 0, 0] for i in range(NUM_CLASSES)]))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def stream_peak(args: argparse.Namespace, images: int) -> float:
    """Peak RSS (GiB) of a fresh process predicting `images` images one after another (bf16 where supported)."""
    code = (
        "import sys, json, resource, torch; sys.path.insert(0, sys.argv[1]); "
        "import benchmarks.bench_infer as b; from evaluate.inference import predict_images; "
        "torch.set_num_threads(int(sys.argv[6])); "
        "m = b.build_model(sys.argv[2], 'linear'); n = int(sys.argv[3]); size = int(sys.argv[4]); "
        "crop, stride = (int(v) for v in sys.argv[7].split('/')); "
        "[p.mask.sum() for p in predict_images(m, (b.synthetic_image(size, i) for i in range(n)), b.NUM_CLASSES, crop, stride, 8, device=sys.argv[5])]; "
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    root = str(pathlib.Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            root,
            args.backbone,
            str(images),
            str(args.size),
            args.device,
            str(args.threads),
            args.windows[0],
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--heads", nargs="+", default=["linear", "segformer"])
    parser.add_argument("--size", type=int, default=1920, help="side of the square test image")
    parser.add_argument(
        "--windows",
        nargs="+",
        default=["392/392", "448/298"],
        help="window settings as crop/largest step: a default run's on ViT-S/14 (28 patches, the fewest windows), then the former default",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass when batched")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument(
        "--stream", type=int, default=4, help="images in the long stream of the memory check (0: skip it)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common.runtime import bf16_native, resolve_device
    from models.sliding_window import window_starts

    device = resolve_device(args.device)
    image = synthetic_image(args.size)
    precisions = [False] + ([True] if bf16_native(device) else [])
    rows = []
    for head in args.heads:
        model = build_model(args.backbone, head).to(device)
        for bf16 in precisions:
            group = []
            for setting in args.windows:
                crop, stride = (int(v) for v in setting.split("/"))
                windows = f"{len(window_starts(args.size, crop, stride)) ** 2} x {crop} px, step {stride}"
                batched, single = time_prediction(
                    model, image, device, bf16, [args.batch_size, 1], crop, stride, args.repeats
                )
                group.append(
                    [
                        f"{args.backbone} + {head}",
                        windows,
                        "bf16" if bf16 else "fp32",
                        round(batched, 2),
                        round(single, 2),
                        round(single / batched, 2),
                    ]
                )
                print(
                    f"  measured {group[-1][:3]}: {batched:.2f} s batched, {single:.2f} s one window at a time",
                    file=sys.stderr,
                    flush=True,
                )
            rows += [
                row + [f"{group[-1][3] / row[3]:.2f}x"] for row in group
            ]  # against the last setting (the baseline)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{args.size}x{args.size} image, {NUM_CLASSES} classes, {where}, median of {args.repeats}")
    print(
        format_table(
            [
                "model",
                "windows",
                "precision",
                f"s/image batched ({args.batch_size})",
                "s/image one window at a time",
                "batching speed-up",
                f"speed-up over {args.windows[-1]} (batched)",
            ],
            rows,
        )
    )
    print(f"post-processing per image (colonies + palette PNG): {time_postprocessing(args.size, args.repeats):.2f} s")
    if args.stream:
        one, many = stream_peak(args, 1), stream_peak(args, args.stream)
        print(f"peak memory predicting a stream of 1 image: {one:.2f} GiB; of {args.stream} images: {many:.2f} GiB")


if __name__ == "__main__":
    main()
