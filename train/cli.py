"""`python train/train.py [--config train/configs/<head>.yaml] [--key value ...]`: train one head.

`--help` is answered from the config's field list without importing torch, so it is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.cli import UserError, run
from train.config import KEYS, coerce_value, help_text, load_config


def _negations(overrides: dict[str, Any]) -> dict[str, Any]:
    """`--no-cache`, `--no_cache true`, `--nocache` all as `cache=False`, for every boolean key.

    fire already negates `--nocache` (cache=False) and `--no-cache` (as `_cache=False`).
    """
    out = {}
    for key, value in overrides.items():
        key = key.replace("-", "_").lstrip("_")
        name = key.removeprefix("no_") if key.startswith("no_") else key.removeprefix("no")
        if key not in KEYS and name in KEYS and isinstance(KEYS[name].default, bool):
            key, value = name, not coerce_value(name, value)
        out[key] = value
    return out


def train_command(config: str | None = None, **overrides: Any) -> None:
    """Train a segmentation head on a frozen DINO backbone (see --help for every key)."""
    from common.settings import load_settings
    from common.table import format_table
    from train.loop import default_data_dir, run_folder, train

    overrides = _negations(overrides)
    settings = load_settings()
    train_config = load_config(config, **overrides)
    if train_config.resume:
        data_dir = Path(train_config.data_dir).expanduser() if train_config.data_dir else default_data_dir(settings, train_config.dataset, train_config.taxonomy)
        run_config = run_folder(train_config, settings, data_dir) / "config.yaml"
        if not run_config.is_file():
            raise UserError(f"nothing to resume: {run_config.parent} holds no run; check --name and --runs_dir")
        train_config = load_config(run_config, **overrides)  # the run's own config, with this command's changes
    summary = train(train_config, settings)
    if summary.get("main", True):
        print(format_table(["run", "steps", "best val mIoU", "at step", "stopped early"],
                           [[summary["run"], summary["steps"], summary["best_miou"], summary["best_step"], summary["stopped_early"]]]))


def main() -> None:
    if any(arg in ("-h", "--help", "help") for arg in sys.argv[1:]):
        print(help_text())
        return
    run(train_command)
