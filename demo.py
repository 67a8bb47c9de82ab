"""The whole pipeline on the embedded demo data, in FiftyOne's own database.

Each step is the command a user would type, run as a subprocess and printed first, so the demo
doubles as a walk-through. Every step is incremental: a second run reuses what the first made.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from common.cli import UserError, run
from common.names import check_name
from common.settings import REPO_ROOT, load_settings
from data_engineering.demo_data import default_output
from evaluate.fields import RunFields


def _step(title: str, args: list[str]) -> None:
    command = " ".join(shlex.quote(a) for a in ["python", *args])
    print(f"\n=== {title}\n$ {command}", flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT)
    if result.returncode != 0:
        raise UserError(
            f"demo step '{title}' failed (exit {result.returncode}); its message is above, fix it and rerun ./run.sh demo to resume"
        )
    print(f"--- {title}: done in {time.monotonic() - started:.0f} s", flush=True)


def demo(head: str = "linear", steps: int | None = None, num_images: int | None = None) -> None:
    """Generate the demo export, import it, prepare every taxonomy, train a head, evaluate it.

    Args:
        head: which head the demo trains (linear, segformer, upernet, mask2former, pmt).
        steps: training steps (default: the config's).
        num_images: demo images to generate (default: the generator's).
    """
    settings = load_settings()
    dataset = check_name(settings.demo_dataset, "DEMO_DATASET", "set a plain name in .env or the environment")
    check_name(head, "--head", "choose linear, segformer, upernet or mask2former")
    export_dir = default_output(settings.data_root)
    run_name = f"{dataset}_{head}"
    run_dir = settings.runs_dir / run_name

    generate = ["data_engineering/make_demo_data.py", "--output", str(export_dir)]
    if num_images:
        generate += ["--num-images", str(num_images)]
    _step("1/7 generate the synthetic CVAT export", generate)
    _step(
        "2/7 import it into FiftyOne",
        ["data_engineering/import_cvat_export.py", str(export_dir), "--dataset-name", dataset],
    )
    _step("3/7 prepare masks for every taxonomy", ["prepare/prepare_data.py", dataset, "--taxonomy", "all"])
    train = [
        "train/train.py",
        "--config",
        f"train/configs/{head}.yaml",
        "--dataset",
        dataset,
        "--taxonomy",
        "finegrained",
        "--name",
        run_name,
        # The demo's 18 small quadrats: 4 views each learn as well as 8 at half the backbone time, and on a
        # laptop's few cores loader processes only compete with the training threads (benchmarks/README.md).
        "--views-per-image",
        "4",
        "--workers",
        "0",
    ]
    if steps:
        train += ["--steps", str(steps)]
    if (run_dir / "config.yaml").is_file():
        train.append("--resume")  # a finished run resumes as a no-op, an interrupted one where it stopped
    _step("4/7 train a head on the frozen backbone", train)
    _step(
        "5/7 evaluate on the test split and write back to FiftyOne",
        ["evaluate/evaluate.py", "--run", str(run_dir), "--dataset", dataset, "--split", "test"],
    )
    survey_dir = settings.data_root / "demo" / "new_survey"
    survey = f"{dataset}_new_survey"
    _step(
        "6/7 bring in a new survey's photos, never annotated",
        [
            "data_engineering/make_demo_data.py",
            "--output",
            str(survey_dir),
            "--photos-only",
            "--seed",
            "1",
            "--num-images",
            "12",
        ],
    )
    _step(
        "6/7 ... into their own FiftyOne dataset",
        ["data_engineering/import_images.py", str(survey_dir), "--dataset-name", survey],
    )
    _step(
        "7/7 predict the survey: cover per site and year, colony sizes, the most doubtful photos first",
        ["evaluate/predict.py", "--run", str(run_dir), "--dataset", survey, "--points", "25"],
    )
    review = RunFields.for_run(run_name).app_arguments
    print(f"\nThe new survey's report: {run_dir / 'predict' / survey / 'survey.md'}")
    print(
        f"\nDone. Browse the predictions and errors in the FiftyOne App, worst images first:"
        f"\n  python evaluate/app.py {dataset} {review}"
        f"\n(or: pixi run app {dataset} {review}); results are in {Path(run_dir).relative_to(REPO_ROOT) if run_dir.is_relative_to(REPO_ROOT) else run_dir}/eval/{dataset}/test/"
    )


if __name__ == "__main__":
    run(demo)
