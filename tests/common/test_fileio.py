"""common.fileio: a place that cannot be written is one sentence, and what was there stays as it was."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from common import fileio
from common.cli import UserError


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def read_only(tmp_path):
    """A folder holding `old.json` that cannot be written: chmod for a normal user, a read-only tmpfs for root
    (root ignores permissions); skipped where neither works."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.json").write_text('{"kept": true}\n')
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    staging = _listing(folder)
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )
    if not mounted:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    for name, data in staging.items():
        (folder / name).write_bytes(data)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_folder_is_one_sentence_and_keeps_its_file(read_only):
    before = _listing(read_only)
    with pytest.raises(UserError) as error:
        fileio.write_json_atomic(read_only / "old.json", {"kept": False})
    assert str(error.value).startswith(f"cannot write {read_only / 'old.json'}: ") and "\n" not in str(error.value)
    assert any(reason in str(error.value) for reason in ("permission denied", "read-only"))
    with pytest.raises(UserError, match="cannot write"):
        fileio.write_text_atomic(read_only / "sub" / "new.txt", "x")  # its folder cannot be made either
    assert _listing(read_only) == before and sorted(os.listdir(read_only)) == ["old.json"]


def test_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserError, match="a file is where a folder should be"):
        fileio.write_text_atomic(tmp_path / "runs" / "r" / "config.yaml", "x")
    with pytest.raises(UserError, match="a file is where a folder should be"):
        fileio.make_dirs(tmp_path / "runs" / "r")
    with pytest.raises(UserError, match="a file is where a folder should be"):
        with fileio.exclusive_lock(tmp_path / "runs" / "eval" / ".lock", "busy"):
            pass
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_a_folder_where_the_file_should_be(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(UserError, match="a folder is where the file should be"):
        fileio.write_json_atomic(tmp_path / "metrics.json", {})
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_full_disk_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("the old report\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="the disk is full; free some space"):
        fileio.write_text_atomic(target, "the new report\n" * 1000)
    assert target.read_text() == "the old report\n" and os.listdir(tmp_path) == ["report.md"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a small tmpfs needs root")
def test_a_really_full_tmpfs(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("no permission to mount a tmpfs")
    try:
        (folder / "masks.bin").write_bytes(b"old")
        with pytest.raises(UserError, match="the disk is full"):
            fileio.write_bytes_atomic(folder / "masks.bin", os.urandom(256 * 1024))
        assert (folder / "masks.bin").read_bytes() == b"old" and os.listdir(folder) == ["masks.bin"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_other_errors_are_not_disguised(tmp_path):
    with pytest.raises(FileNotFoundError):
        with fileio.atomic_path(tmp_path / "copy.jpg") as tmp:
            shutil.copy2(tmp_path / "no_such_source.jpg", tmp)
    assert os.listdir(tmp_path) == []


def test_a_full_disk_outside_the_atomic_writes_is_one_sentence_at_the_command_line(capsys):
    from common.cli import run

    def command():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/prepared/x/.manifest.journal.jsonl")

    with pytest.raises(SystemExit) as exit_:
        run(command, argv=[])
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and err
        == "error: cannot write /data/prepared/x/.manifest.journal.jsonl: No space left on device; free some space or choose another output folder\n"
    )
