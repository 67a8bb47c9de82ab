"""`python train/train.py [--config train/configs/<head>.yaml] [--key value ...]`: train one head.

`--help` is answered from the config's field list without importing torch, so it is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.cli import UserError, run
from train.config import KEYS, RENAMED_KEYS, help_text, load_config


def train_command(config: str | None = None, **overrides: Any) -> None:
    """Train a segmentation head on a frozen DINO backbone (see --help for every key)."""
    from common.settings import load_settings
    from common.table import format_table
    from train.loop import default_data_dir, run_folder, train

    settings = load_settings()
    train_config = load_config(config, **overrides)
    if train_config.resume:
        data_dir = Path(train_config.data_dir).expanduser() if train_config.data_dir else default_data_dir(settings, train_config.dataset, train_config.taxonomy)
        run_config = run_folder(train_config, settings, data_dir) / "config.yaml"
        if not run_config.is_file():
            raise UserError(f"nothing to resume: {run_config.parent} holds no run; check --name and --runs-dir")
        train_config = load_config(run_config, **overrides)  # the run's own config, with this command's changes
    summary = train(train_config, settings)
    if summary.get("main", True):
        print(format_table(["run", "steps", "best val mIoU", "at step", "stopped early"],
                           [[summary["run"], summary["steps"], summary["best_miou"], summary["best_step"], summary["stopped_early"]]]))


def main() -> None:
    # every config key is a flag, checked by common.cli before any work: booleans strictly, the rest by load_config
    flags = {name: "bool" if isinstance(f.default, bool) else "Any" for name, f in KEYS.items()}
    flags.update({old: "Any" for old in RENAMED_KEYS})  # old names still accepted, with a note (load_config)
    run(train_command, extra=flags, help_text=help_text)
