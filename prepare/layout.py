"""The prepared-dataset folder: the one definition of its paths, files and how to read it back.

```
<folder>/
  train/data/<stem>.<ext>   images, hard-linked (or copied) from the source, never re-encoded
  train/labels/<stem>.png   palette PNG masks: 0 background, 1..N classes, 255 ignore
  val/...  test/...
  classes.txt               line i = class i, line 0 `background`
  palette.txt               line i = `R G B` of class i
  dataset_info.json         taxonomy, classes, palette, split sizes, per-class statistics, source, rules
  manifest.jsonl            one JSON object per sample (`ManifestEntry`)
```

The train stage reads a folder with `load_prepared`; MMSegmentation can read it as is.
Documented in docs/prepared_dataset.md: change both together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.cli import UserError
from common.fileio import sha256_file, write_text_atomic
from common.labels import BACKGROUND_INDEX, IGNORE_INDEX  # noqa: F401  (part of the folder contract: layout.BACKGROUND_INDEX)
from common.names import check_name
from prepare.mask_png import palette_bytes, read_mask

SPLITS = ("train", "val", "test")
IMAGES_DIR = "data"
MASKS_DIR = "labels"
MASK_SUFFIX = ".png"
CLASSES_FILE = "classes.txt"
PALETTE_FILE = "palette.txt"
INFO_FILE = "dataset_info.json"
MANIFEST_FILE = "manifest.jsonl"
JOURNAL_FILE = ".manifest.journal.jsonl"  # samples finished by a run that has not completed yet
OWNER_FILE = ".reefseg-prepare.json"  # marks a folder as written by this stage, for which dataset
BACKGROUND_NAME = "background"
BACKGROUND_COLOR = (0, 0, 0)
IGNORE_COLOR = (255, 255, 255)
CREATED_BY = "reefseg.prepare"


def default_output_dir(data_root: Path, dataset_name: str, taxonomy: str) -> Path:
    """Where `prepare_data.py` writes a dataset prepared with a taxonomy unless --output-dir says otherwise
    (train and evaluate look there by default); both names are checked: never a path."""
    check_name(dataset_name, "dataset name", "pass the name of a FiftyOne dataset made by data_engineering")
    check_name(taxonomy, "taxonomy name", "pass a taxonomy's name, or its .yaml file in TAXONOMY_DIRS")
    return Path(data_root) / "prepared" / f"{dataset_name}_{taxonomy}"


@dataclass
class ManifestEntry:
    """One prepared sample. Paths are relative to the folder; `source_key` decides whether a rerun redoes it."""

    sample_id: str
    split: str
    image: str
    mask: str
    width: int
    height: int
    source_image: str
    image_sha256: str
    mask_sha256: str
    source_key: str
    palette_key: str  # which colours the mask file carries; a new palette is painted in without redrawing
    pixels: dict[str, int] = field(default_factory=dict)  # class index (as text) -> pixel count
    instances: dict[str, int] = field(default_factory=dict)  # class index (as text) -> polygons drawn

    @classmethod
    def from_json(cls, line: str) -> ManifestEntry:
        return cls(**json.loads(line))

    def to_json(self) -> str:
        return json.dumps(vars(self), separators=(",", ":"))


def image_relpath(split: str, filename: str) -> str:
    return f"{split}/{IMAGES_DIR}/{filename}"


def mask_relpath(split: str, stem: str) -> str:
    return f"{split}/{MASKS_DIR}/{stem}{MASK_SUFFIX}"


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Entries of a manifest or journal; a torn last line (an interrupted append) is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(ManifestEntry.from_json(line))
        except (json.JSONDecodeError, TypeError):
            continue
    return entries


def manifest_text(entries: Iterable[ManifestEntry]) -> str:
    ordered = sorted(entries, key=lambda e: (SPLITS.index(e.split), e.image))
    return "".join(e.to_json() + "\n" for e in ordered)


def classes_text(classes: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in [BACKGROUND_NAME, *classes])


def palette_text(colors: Sequence[Sequence[int]]) -> str:
    return "".join(f"{r} {g} {b}\n" for r, g, b in [BACKGROUND_COLOR, *colors])


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically unless the file already holds it; True when written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text_atomic(path, text)
    return True


def write_metadata(
    root: Path,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    info: dict[str, Any],
    entries: Sequence[ManifestEntry],
) -> None:
    """The four files beside the masks that make a folder a prepared dataset, each written only when it changed."""
    write_if_changed(root / CLASSES_FILE, classes_text(classes))
    write_if_changed(root / PALETTE_FILE, palette_text(palette))
    write_if_changed(root / INFO_FILE, info_text(info))
    write_if_changed(root / MANIFEST_FILE, manifest_text(entries))


def png_palette(palette: Sequence[Sequence[int]]) -> bytes:
    """The 256-colour PLTE payload of a mask: `palette` (background first, as in palette.txt), black, then ignore's colour at 255."""
    return palette_bytes([*palette, *[BACKGROUND_COLOR] * (IGNORE_INDEX - len(palette)), IGNORE_COLOR])


def info_text(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2) + "\n"


@dataclass
class PreparedDataset:
    """A prepared folder as the train stage sees it."""

    root: Path
    classes: list[str]  # index 0 is background
    palette: list[tuple[int, int, int]]
    info: dict[str, Any]
    entries: list[ManifestEntry]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        """Classes a model predicts, background included."""
        return len(self.classes)

    def split(self, name: str) -> list[ManifestEntry]:
        return [e for e in self.entries if e.split == name]

    def image_path(self, entry: ManifestEntry) -> Path:
        return self.root / entry.image

    def mask_path(self, entry: ManifestEntry) -> Path:
        return self.root / entry.mask

    def check_mask(self, entry: ManifestEntry) -> None:
        """UserError naming the file and the fix when `entry`'s mask is not the file prepare wrote (missing, empty,
        unreadable, another size, values outside the classes, or any other change of its bytes)."""
        problem = mask_problem(self.mask_path(entry), entry, self.num_classes, self.ignore_index)
        if problem:
            source = (self.info.get("source") or {}).get("dataset")
            taxonomy = (self.info.get("taxonomy") or {}).get("name")
            command = (
                f"prepare/prepare_data.py {source} --taxonomy {taxonomy}"
                if source and taxonomy
                else "prepare/prepare_data.py"
            )
            raise UserError(f"mask {self.mask_path(entry)} {problem}; rerun {command} to redraw it")


def mask_problem(path: Path, entry: ManifestEntry, num_classes: int, ignore_index: int = IGNORE_INDEX) -> str:
    """Why the mask file at `path` is not the one the manifest entry lists ("" when it is): one clause for a message."""
    valid = f"0-{num_classes - 1} and {ignore_index}"
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        return f"is listed in {MANIFEST_FILE} but missing"
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if digest == entry.mask_sha256:  # the bytes prepare wrote; their values were counted then
        strangers = sorted(int(v) for v in entry.pixels if int(v) >= num_classes and int(v) != ignore_index)
        return (
            f"holds value {strangers[0]} according to {MANIFEST_FILE}, but masks of {num_classes} classes hold {valid}"
            if strangers
            else ""
        )
    if path.stat().st_size == 0:
        return "is empty"
    try:
        mask = read_mask(path)
    except (OSError, ValueError, SyntaxError):
        return "is not a readable mask PNG"
    if mask.shape != (entry.height, entry.width):
        return f"is {mask.shape[1]}x{mask.shape[0]} but its image is {entry.width}x{entry.height}"
    values = np.unique(mask)
    strangers = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if strangers:
        return f"holds value {strangers[0]}, but masks of {num_classes} classes hold {valid}"
    return f"changed since prepare wrote it (its SHA-256 differs from {MANIFEST_FILE}'s)"


def load_prepared(folder: str | Path) -> PreparedDataset:
    """Read a folder written by `prepare_data.py`; one clear error when it is not one."""
    root = Path(folder).expanduser().resolve()
    missing = [name for name in (CLASSES_FILE, PALETTE_FILE, INFO_FILE, MANIFEST_FILE) if not (root / name).is_file()]
    if missing:
        raise UserError(
            f"{root} is not a prepared dataset (missing {', '.join(missing)}); run prepare/prepare_data.py first"
        )
    classes = (root / CLASSES_FILE).read_text(encoding="utf-8").splitlines()
    palette = [
        tuple(int(v) for v in line.split()) for line in (root / PALETTE_FILE).read_text(encoding="utf-8").splitlines()
    ]
    info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    if len(palette) != len(classes) or classes[:1] != [BACKGROUND_NAME]:
        raise UserError(
            f"{root}: {CLASSES_FILE} and {PALETTE_FILE} disagree; rerun prepare/prepare_data.py with --overwrite"
        )
    return PreparedDataset(
        root=root,
        classes=classes,
        palette=palette,  # type: ignore[arg-type]
        info=info,
        entries=read_manifest(root / MANIFEST_FILE),
        ignore_index=int(info.get("ignore_index", IGNORE_INDEX)),
    )
