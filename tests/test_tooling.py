"""The static checks (ruff, mypy) are pinned, configured, and run before the tests on every route.

`./run.sh test` is run for real on a copy of run.sh whose environment is a folder of fake tools
that log their calls, so the order and the stop-on-failure behaviour are what is checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STATIC_TOOLS = ("ruff", "mypy")


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", requirement.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_dev_extras_pin_ruff_and_mypy_as_the_lock_does():
    dev = _pins(PYPROJECT["project"]["optional-dependencies"]["dev"])
    lock = _pins(
        [line for line in (ROOT / "requirements.lock").read_text().splitlines() if not line.startswith(("#", " "))]
    )
    for tool in STATIC_TOOLS:
        assert tool in dev, f"{tool} is not pinned in pyproject's dev extras"
        assert lock.get(tool) == dev[tool], f"requirements.lock has {tool} {lock.get(tool)}, pyproject {dev[tool]}"


def test_ruff_and_mypy_are_configured_for_every_stage():
    tool = PYPROJECT["tool"]
    assert tool["ruff"]["line-length"] == 120
    assert tool["ruff"]["target-version"] == "py311"
    assert {"E", "F", "W", "I", "B", "UP"} <= set(tool["ruff"]["lint"]["select"])
    assert set(tool["mypy"]["packages"]) == {"common", "data_engineering", "prepare", "models", "train", "evaluate"}
    assert tool["mypy"]["check_untyped_defs"] is True


def test_pixi_test_task_lints_first():
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())["tasks"]
    assert "lint" in pixi["test"]["depends-on"]
    lint = pixi["lint"] if isinstance(pixi["lint"], str) else pixi["lint"]["cmd"]  # tasks may carry a description
    assert all(tool in lint for tool in STATIC_TOOLS) and "ruff format --check ." in lint


def _fake_checkout(tmp_path: Path, failing: str | None) -> tuple[Path, Path]:
    """A copy of run.sh with an already-installed .venv of fake ruff, mypy and python that log their calls."""
    for name in ("run.sh", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    for tool in ("ruff", "mypy", "python"):
        status = 1 if tool == failing else 0
        script = bin_dir / tool
        script.write_text(f'#!/usr/bin/env bash\necho "{tool} $*" >> "{log}"\nexit {status}\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    stamp = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements.lock").read_bytes()
    ).hexdigest()
    (tmp_path / ".venv" / ".reefseg-installed").write_text(stamp + "\n")
    return tmp_path / "run.sh", log


def _run(run_sh: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", str(run_sh), *args], capture_output=True, text=True, timeout=60, env=env)


def test_run_sh_test_runs_ruff_and_mypy_before_pytest(tmp_path):
    run_sh, log = _fake_checkout(tmp_path, failing=None)
    result = _run(run_sh, "test", "-k", "something")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "ruff check .",
        "ruff format --check .",
        "mypy ",
        "python -m pytest -k something",
    ]


@pytest.mark.parametrize("failing", STATIC_TOOLS)
def test_run_sh_test_stops_when_a_static_check_fails(tmp_path, failing):
    run_sh, log = _fake_checkout(tmp_path, failing=failing)
    result = _run(run_sh, "test")
    assert result.returncode == 1
    calls = list(dict.fromkeys(line.split()[0] for line in log.read_text().splitlines()))  # ruff runs twice
    assert calls == list(STATIC_TOOLS[: STATIC_TOOLS.index(failing) + 1]), "pytest (or mypy) ran after a failed check"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run.sh test" in ci.splitlines()[-1]
