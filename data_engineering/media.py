"""Where a dataset's images live, and how a copy lands there without replacing anything a sample uses.

    folder = new_media_folder("Reef 2021")               # "Reef_2021-3f9c01a2": slug + random id, one per dataset
    base = media_path(media_dir, folder, 12, "a.jpg")    # <media_dir>/<folder>/task_12/a.jpg
    path = stored_copy(base, digest)                     # the file already holding that content, or None
    path = store(base, digest, write)                    # writes atomically where nothing else is; returns the path

Every dataset gets its own folder, named once when the dataset is made (kept in `dataset.info`), so two
datasets never share a file whatever their names or their CVAT projects. Inside it, `task_<id>/<file name>`
keeps CVAT's names readable in the App. A file is never replaced by other content: when the usual place
holds other bytes (a task re-exported with a changed photo), the new content goes to
`task_<id>/<first 16 hex digits of its sha256>/<file name>` and the old file stays for the samples using it.
Content is compared by SHA-256, never by size.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from common.errors import UserError
from common.fileio import atomic_path, sha256_file

HASH_FOLDER_DIGITS = 16
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}-[0-9a-f]{8}")


def new_media_folder(dataset_name: str) -> str:
    """A fresh folder name for a dataset's media: its name slugged (readable) plus a random id (unique)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name.strip()).strip("._-")[:60] or "dataset"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def check_media_folder(name: object) -> str:
    """A media folder name read back from the database, refused unless it is one `new_media_folder` makes."""
    if not isinstance(name, str) or not _FOLDER.fullmatch(name):
        raise UserError(
            f"the dataset's media folder {name!r} (dataset.info) is not a folder name reefseg made; "
            "re-import into a new --dataset-name, or pass --overwrite"
        )
    return name


def sha256_stream(stream: IO[bytes], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    while block := stream.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def _places(base: Path, digest: str) -> tuple[Path, Path]:
    return base, base.parent / digest[:HASH_FOLDER_DIGITS] / base.name


def stored_copy(base: Path, digest: str) -> Path | None:
    """Where the content with this SHA-256 already is (its usual place or its hash folder), or None."""
    for place in _places(base, digest):
        if place.is_file() and not place.is_symlink() and sha256_file(place) == digest:
            return place
    return None


def store(base: Path, digest: str, write: Callable[[Path], object]) -> Path:
    """Write content (its SHA-256 is `digest`) with `write(tmp)`, atomically, where no other content is.

    The usual place if it is free, else the hash folder (whose file, named after this content, may be
    replaced: other bytes there are a damaged copy). `write` may raise to refuse the content; nothing stays.
    """
    usual, by_hash = _places(base, digest)
    target = usual if not (usual.exists() or usual.is_symlink()) else by_hash
    if target.is_symlink():
        target.unlink()
    with atomic_path(target) as tmp:
        write(tmp)
    return target


def copy_into(source: IO[bytes], tmp: Path) -> None:
    with open(tmp, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
