"""Seconds per 1920x1920 quadrat through the CVAT functions: the cvat-sdk auto-annotation function and the Nuclio handler.

    python benchmarks/bench_cvat_function.py                       # this CPU, ViT-S/14 + linear, 17 classes
    python benchmarks/bench_cvat_function.py --device cuda --repeats 5

A run folder is written with RANDOM backbone weights (none can be downloaded here; speed does not
depend on them) and a linear head whose random weights are scaled up so the prediction is
fragmented into many colonies (a pessimistic case for the shape conversion). Then, median of
`--repeats` runs after one warm-up, it times: `ReefFunction.detect` as `cvat-cli task auto-annotate`
calls it (PIL image in, masks or polygons out), and the Nuclio `handler` on CVAT's request body
(a base64 JPEG in, JSON text out). The same process first times one ViT-S/14 forward at 518² (the
calibration the other benchmarks report), so figures from a loaded machine can be scaled.
"""

from __future__ import annotations

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.bench_infer import synthetic_image  # noqa: E402
from benchmarks.fixtures import NUM_CLASSES, calibration_forward, write_run  # noqa: E402
from common.table import format_table  # noqa: E402

CVAT_TIMEOUT_S = 120  # CVAT_NUCLIO_DEFAULT_TIMEOUT's default


@dataclass(frozen=True)
class Context:
    """What cvat-sdk's driver hands `detect`."""

    frame_name: str
    conf_threshold: float | None
    conv_mask_to_poly: bool


def timed(call, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for run in range(repeats + 1):
        start = time.perf_counter()
        result = call()
        if run:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument(
        "--window", type=int, default=392, help="the run's window and stride (392: the default config's on ViT-S/14)"
    )
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--size", type=int, default=1920)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common.runtime import resolve_device, resolve_runtime
    from common.settings import load_settings
    from evaluate import nuclio_handler
    from evaluate.cvat_function import load_function

    device = resolve_device(args.device)
    calibration = calibration_forward(device, args.repeats)
    print(
        "calibration, ViT-S/14 forward at 518², batch 1: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items()),
        file=sys.stderr,
        flush=True,
    )
    image = Image.fromarray(synthetic_image(args.size))
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=90)
    body = json.dumps({"image": base64.b64encode(jpeg.getvalue()).decode(), "threshold": 0.0}).encode()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_dir = pathlib.Path(tmp) / "bench-run"
        write_run(run_dir, args.backbone, args.window)
        settings = load_settings(device=args.device)
        function = load_function(str(run_dir), precision=args.precision, settings=settings)
        precision = resolve_runtime(args.device, args.precision).precision
        for as_polygons in (False, True):
            seconds, shapes = timed(
                lambda polygons=as_polygons: function.detect(Context("quadrat.jpg", None, polygons), image),
                args.repeats,
            )
            rows.append(
                [
                    f"cvat-cli function, {'polygons' if as_polygons else 'masks'}",
                    precision,
                    len(shapes),
                    round(seconds, 2),
                ]
            )
            print(f"  measured {rows[-1]}", file=sys.stderr, flush=True)
        context = SimpleNamespace(user_data=SimpleNamespace(function=function, as_mask=True), logger=SimpleNamespace(info=lambda m: None, warn=print),
                                  Response=lambda body, headers, content_type, status_code: SimpleNamespace(body=body, status_code=status_code))  # fmt: skip
        seconds, answer = timed(lambda: nuclio_handler.handler(context, SimpleNamespace(body=body)), args.repeats)
        rows.append(
            [
                "Nuclio handler (base64 JPEG in, JSON out), masks",
                precision,
                len(json.loads(answer.body)),
                round(seconds, 2),
            ]
        )
    print(f"{args.backbone} + linear ({NUM_CLASSES} classes), {args.size}x{args.size}, windows {args.window} px, {device.type}, "
          f"{args.threads} threads, median of {args.repeats} after a warm-up; CVAT waits {CVAT_TIMEOUT_S} s for a Nuclio function by default")  # fmt: skip
    print(format_table(["path", "precision", "shapes", "s/quadrat"], rows))
    print(
        "calibration, ViT-S/14 forward at 518², batch 1: " + ", ".join(f"{k} {v:.3f} s" for k, v in calibration.items())
    )


if __name__ == "__main__":
    main()
