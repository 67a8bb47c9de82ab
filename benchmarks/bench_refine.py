"""What `predict.py --refine sam` adds per 1920x1920 quadrat: SAM ViT-B's image embedding and the prompts of its colonies.

    python benchmarks/bench_refine.py                       # vit_b, 40 colonies, fp32 and bf16, 2 repeats
    python benchmarks/bench_refine.py --variant vit_h --colonies 120 --repeats 1

SAM is built with segment_anything's registry and RANDOM weights (none can be downloaded here; speed does not
depend on them), written as an official checkpoint and loaded through `evaluate.sam_models`, as predict does.
The semantic mask has `--colonies` elliptical colonies of three genera (sizes as in the demo quadrats); each is
prompted as predict prompts it (box, 3 positive and up to 2 negative points). The time is split into the image
embedding (once per photo) and the prompts (decoder + masks in their windows + the majority rule), and given
also in calibration forwards (one ViT-S/14 518² forward, `benchmarks/fixtures.py`) measured in the same run.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.fixtures import calibration_forward  # noqa: E402
from common.table import format_table  # noqa: E402


def semantic_quadrat(size: int, colonies: int, seed: int = 0) -> np.ndarray:
    """A class mask with `colonies` ellipses of genera 1-3, radii 20-160 px, later ones on top."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    rows, columns = np.ogrid[:size, :size]
    for _ in range(colonies):
        cy, cx = rng.integers(0, size, 2)
        ry, rx = rng.integers(20, 160, 2)
        mask[((rows - cy) / ry) ** 2 + ((columns - cx) / rx) ** 2 <= 1] = rng.integers(1, 4)
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--size", type=int, default=1920)
    parser.add_argument("--colonies", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from segment_anything import sam_model_registry

    from common.runtime import bf16_native, resolve_runtime
    from evaluate.refine_sam import RefineSettings, colony_prompt, colony_regions, combine, refined_windows
    from evaluate.sam_models import check_sam_weights, load_sam

    device = torch.device("cpu")
    print(f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} threads", flush=True)
    calibration = calibration_forward(device)
    semantic = semantic_quadrat(args.size, args.colonies)
    image = np.random.default_rng(1).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    settings = RefineSettings()
    regions = colony_regions(semantic, settings.min_area)
    prompts = [colony_prompt(semantic, region, settings) for region in regions]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"sam_{args.variant}_random.pth"
        torch.save(sam_model_registry[args.variant]().state_dict(), path)
        start = time.perf_counter()
        weights = check_sam_weights(path)
        check_seconds = time.perf_counter() - start
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not bf16_native(device):
                continue
            sam = load_sam(weights, resolve_runtime("cpu", precision))
            embed_s, prompt_s = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                embedded = sam.embed(image)
                embed_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                refined = refined_windows(sam, embedded, prompts)
                combine(semantic, regions, refined, [p.window for p in prompts], 4)
                prompt_s.append(time.perf_counter() - start)
            rows.append((precision, statistics.median(embed_s), statistics.median(prompt_s)))
    after = calibration_forward(device)  # the machine's speed may change during the run: both ends count
    unit = {k: (calibration[k] + after[k]) / 2 for k in calibration}
    table = [
        (
            f"SAM {args.variant} {p}",
            round(e, 2),
            round(q, 2),
            round(e + q, 2),
            round((e + q) / unit.get(p, unit["fp32"]), 1),
        )
        for p, e, q in rows
    ]
    print(
        f"{args.size}x{args.size} quadrat, {len(prompts)} colonies prompted; weights checked in {check_seconds:.1f} s; "
        f"calibration forward (ViT-S/14 518²) at the start / end: "
        + ", ".join(f"{k} {calibration[k]:.2f} / {after[k]:.2f} s" for k in calibration)
        + f"; load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        format_table(
            ["model", "embedding s", "prompts s", "refinement s/quadrat", "in calibration forwards (mean of both)"],
            table,
        )
    )


if __name__ == "__main__":
    main()
