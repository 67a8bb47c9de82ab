"""Atomic file writes: a reader never sees a half-written file, and an interrupted run leaves none.

Everything is written to a temporary file in the destination folder, flushed, then renamed over
the destination (`os.replace` is atomic on one file system). A destination that cannot be written
(a read-only folder or file system, a file where a folder should be, a full disk) is a UserError
naming the path, and whatever the destination held before is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError

# Errors of the place written to, not of the program: reported as one sentence, never a traceback.
_UNWRITABLE = {
    errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded", errno.ENOTDIR: "a file is where a folder should be",
    errno.EEXIST: "a file is where a folder should be", errno.EISDIR: "a folder is where the file should be",
}  # fmt: skip


def unwritable(error: OSError, target: Path) -> UserError | None:
    """The UserError for an OSError that says `target` cannot be written there, or None for any other error."""
    reason = _UNWRITABLE.get(error.errno or 0)
    if reason is None:
        return None
    where = (
        f" ({error.filename})"
        if error.filename and Path(error.filename) != target and error.errno in (errno.ENOTDIR, errno.EEXIST)
        else ""
    )
    fix = (
        "free some space"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else "fix the folder's permissions or move what is in the way"
    )
    return UserError(
        f"cannot write {target}: {reason}{where}; {fix}, or choose another output folder (what was there is unchanged)"
    )


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """`mkdir -p folder`, with a UserError when it cannot be made (read-only, a file in the way)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (unwritable(error, path) or error) from None
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: str) -> Iterator[None]:
    """Hold an advisory lock on `path` for the block, or raise UserError(`busy`) if another process holds it.

    The operating system drops the lock when its holder exits, so a crash or Ctrl-C leaves nothing
    stale behind; the lock file itself stays (it is empty).
    """
    import fcntl  # POSIX only: imported here so the atomic writes above work on any system

    target = Path(path)
    make_dirs(target.parent)
    try:
        handle = open(target, "a")
    except OSError as error:
        raise (unwritable(error, target) or error) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed and `path` is
    left as it was. A place that cannot be written (read-only, a file in the way, a full disk) is a UserError."""
    target = Path(path)
    make_dirs(target.parent)
    try:
        # the name is cut so that a target name near the file system's 255-byte limit still gets a temporary file
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem[:40]}.", suffix=".part" + target.suffix[:16], dir=target.parent
        )
    except OSError as error:
        raise (unwritable(error, target) or error) from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _new_file_mode())  # mkstemp makes 0o600; a shared media or data folder needs the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        failure = (
            unwritable(error, target)
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR)
            else None
        )
        if failure is None:
            raise
        raise failure from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` atomically; `fsync=False` skips forcing it to disk (interruptions are still
    safe, a power cut may not be), for many small files that can be made again."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large images cost no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's content; one sentence with the line and column when it is not YAML, or not text."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(
            f"{what} {path} is not valid YAML{at} ({getattr(error, 'problem', None) or 'unreadable'}); fix or restore it"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; fix or restore it") from None
