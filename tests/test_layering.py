"""Imports flow one way (docs/architecture.md): common < data_engineering < prepare < models < train < evaluate.

Checked on the source (every import statement, top level or inside a function), so a contract that
moves back up a stage, or an evaluate module reaching into train, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data_engineering", "prepare", "models", "train", "evaluate")
ALLOWED = {
    "common": {"common"},
    "data_engineering": {"common", "data_engineering"},
    "prepare": {"common", "data_engineering", "prepare"},
    "models": {"common", "models"},
    "train": {"common", "prepare", "models", "train"},
    "evaluate": {"common", "data_engineering", "prepare", "models", "evaluate"},
}
# Entry points other tools call, the command-line boundary of their own: cvat-cli's function module
# (`create` -> `load_function`) and the Nuclio handler. They read the settings once and pass complete options down.
OTHER_ENTRY_POINTS = {"evaluate/cvat_function.py", "evaluate/nuclio_handler.py"}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_each_stage_imports_only_the_stages_beneath_it():
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported in sorted(_imported_packages(path) - ALLOWED[package]):
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == []


def test_below_the_command_line_nothing_loads_settings():
    """prepare, train and evaluate meet the settings once, in their `cli.py`; the cores get complete options."""
    callers = []
    for package in ("models", "prepare", "train", "evaluate"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "cli.py" or path.relative_to(ROOT).as_posix() in OTHER_ENTRY_POINTS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_settings"
                ):
                    callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert callers == []
