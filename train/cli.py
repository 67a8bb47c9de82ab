"""`python train/train.py [--config train/configs/<head>.yaml] [--key value ...]`: train one head.

`--help` is answered from the config's field list without importing torch, so it is instant.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from common.cli import UserError, run
from train.config import KEYS, RENAMED_KEYS, help_text, load_config, resolve_config


def train_command(config: str | None = None, **overrides: Any) -> None:
    """Train a segmentation head on a frozen DINO backbone (see --help for every key)."""
    from common.settings import load_settings
    from common.table import format_table
    from train.loop import STATE_FILE, run_folder, train

    settings = load_settings()
    train_config = resolve_config(load_config(config, **overrides), settings)
    run_dir = run_folder(train_config)
    if train_config.resume:
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"nothing to resume: {run_dir} holds no run; check --name and --runs-dir")
        # the run's own config, with this command's changes
        train_config = resolve_config(load_config(run_dir / "config.yaml", **overrides), settings)
    try:
        summary = train(train_config)
    except KeyboardInterrupt:
        print(interrupted_advice(run_dir, (run_dir / STATE_FILE).is_file(), sys.argv), file=sys.stderr)
        sys.exit(130)
    if summary.get("main", True):
        print(
            format_table(
                [
                    "run",
                    "steps",
                    "best val mIoU",
                    "at step",
                    "stopped early",
                    "caching s",
                    "training s",
                    "validation s",
                ],
                [
                    [
                        summary["run"],
                        summary["steps"],
                        summary["best_miou"],
                        summary["best_step"],
                        summary["stopped_early"],
                        f"{summary['cache_seconds']:.0f}",
                        f"{summary['train_seconds']:.0f}",
                        f"{summary['validation_seconds']:.0f}",
                    ]
                ],
            )
        )


def interrupted_advice(run_dir: Path, saved: bool, argv: list[str]) -> str:
    """What to type after Ctrl-C: the command with --resume once a training state is saved, else the same command."""
    if not saved:
        return f"interrupted before the first checkpoint of {run_dir}: rerun the same command to start it again"
    args, skip = [], False
    for arg in argv[1:]:  # this command without its own --resume / --no-resume, then --resume
        if skip:
            skip = False
            if arg.lower() in ("true", "false", "yes", "no", "1", "0"):
                continue
        name = arg.split("=", 1)[0].replace("_", "-")
        if name in ("--resume", "--no-resume"):
            skip = "=" not in arg
            continue
        args.append(arg)
    command = shlex.join(["python", argv[0], *args, "--resume"])
    return f"interrupted: {run_dir} keeps its last checkpoint; continue from it with: {command}"


def main() -> None:
    # every config key is a flag, checked by common.cli before any work: booleans strictly, the rest by load_config
    flags = {name: "bool" if isinstance(f.default, bool) else "Any" for name, f in KEYS.items()}
    flags.update({old: "Any" for old in RENAMED_KEYS})  # old names still accepted, with a note (load_config)
    run(train_command, extra=flags, help_text=help_text)
