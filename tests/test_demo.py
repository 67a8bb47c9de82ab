"""demo.py: each step is printed with its command and the seconds it took, the head's training included."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import demo


def test_the_demo_prints_how_long_its_head_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands: list[list[str]] = []

    def fake_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
        commands.append(args[1:])  # the script and its flags, after the interpreter
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    demo.demo()
    out = capsys.readouterr().out
    trains = [c for c in commands if c[0] == "train/train.py"]
    assert len(trains) == 1 and trains[0][:3] == ["train/train.py", "--config", "train/configs/linear.yaml"]
    # the demo's quicker training (benchmarks/README.md)
    assert "--views-per-image 4 --workers 0" in " ".join(trains[0])
    assert "$ python train/train.py --config train/configs/linear.yaml" in out
    assert re.search(r"^--- 4/7 train a head on the frozen backbone: done in \d+ s$", out, re.MULTILINE), out
    assert len(re.findall(r"^--- .*: done in \d+ s$", out, re.MULTILINE)) == len(commands)
