"""pixi.toml stays consistent with pyproject.toml, and every pixi task names a command that runs.

pixi itself cannot be installed here, so the manifest is checked as data and each task's command
is run the way pixi would run it (its `--help` where the task needs a server or a long job).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIXI = tomllib.loads((ROOT / "pixi.toml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIRED_TASKS = {"pull", "import-export", "prepare", "train", "evaluate", "app", "demo", "test", "bench"}


def _pin(requirement: str) -> tuple[str, str]:
    name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", requirement.strip()).groups()
    return name.lower().replace("_", "-"), version


def _pixi_pins(table: dict) -> dict[str, str]:
    pins = {}
    for name, spec in table.items():
        version = spec if isinstance(spec, str) else spec.get("version")
        if version:
            pins[name.lower().replace("_", "-")] = version.removeprefix("==")
    return pins


def test_pixi_pins_match_pyproject():
    project = PYPROJECT["project"]
    wanted = dict(_pin(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_pin(r) for r in extra)
    base = _pixi_pins(PIXI["pypi-dependencies"])
    for env in ("cpu", "cuda"):
        pins = {**base, **_pixi_pins(PIXI["feature"][env]["pypi-dependencies"])}
        assert pins == wanted, f"pixi environment {env} differs from pyproject.toml"


def test_pixi_has_conda_forge_python_mongodb_and_both_environments():
    assert PIXI["workspace"]["channels"] == ["conda-forge"]
    assert {"python", "mongodb"} <= set(PIXI["dependencies"])
    assert {"cpu", "cuda"} <= set(PIXI["environments"])
    assert REQUIRED_TASKS <= set(PIXI["tasks"])


def _script_tasks() -> list[tuple[str, list[str]]]:
    tasks = []
    for name, task in PIXI["tasks"].items():
        cmd = task if isinstance(task, str) else task.get("cmd")
        if cmd and cmd.startswith("python "):
            tasks.append((name, shlex.split(cmd)[1:]))
    return tasks


def test_every_task_names_something_that_exists():
    for name, task in PIXI["tasks"].items():
        if isinstance(task, dict) and "depends-on" in task:
            assert set(task["depends-on"]) <= set(PIXI["tasks"]), name
            continue
        args = shlex.split(task if isinstance(task, str) else task["cmd"])
        if args[0] == "python" and args[1] != "-m":
            assert (ROOT / args[1]).is_file(), f"task {name}: {args[1]} does not exist"
        elif args[0] == "python":
            assert subprocess.run([sys.executable, "-m", args[2], "--version"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("name,args", [t for t in _script_tasks() if t[1][0] != "-m"], ids=lambda v: v if isinstance(v, str) else "")
def test_task_help_runs_offline(name, args):
    env = {**os.environ, "PAGER": "cat"}
    out = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, f"pixi task {name}: {out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() or out.stderr.strip()


def test_readme_and_ci_use_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("./run.sh demo", "./run.sh test", "pixi run demo", "pixi run test"):
        assert command in readme
    assert "./run.sh test" in ci
