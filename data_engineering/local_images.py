"""Photos that were never in CVAT (the next survey) into a persistent FiftyOne dataset, in place.

    paths = find_images("surveys/2024")           # a folder (searched recursively) or a glob pattern
    summary = import_images(paths, "moorea_2024", options)

The photos stay where they are (nothing is copied or moved); each sample records the file's
sha256, so a rerun adds only new files, refreshes a file whose content changed, and later stages
never predict an unchanged image twice. Sizes are those of the photo as displayed, after its EXIF
orientation. Files that are not whole images are listed in the summary and left out.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from common.cli import UserError, run
from common.fileio import sha256_file
from common.image_files import ImageProblem, check_image
from common.table import format_table
from data_engineering import dataset_contract as contract
from data_engineering.filenames import parse_quadrat_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the photo by 90 degrees
_EXIF_ORIENTATION = 0x0112


def find_images(source: str | Path) -> list[Path]:
    """Image files under a folder (recursively) or matching a glob pattern, sorted, as absolute paths."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file():
        found = [path]
    elif glob.has_magic(text):
        found = [Path(p) for p in glob.glob(str(path), recursive=True)]
        found = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise UserError(
            f"{text} is neither a folder, an image file nor a glob pattern that matches files; check the path"
        )
    if not found:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {text}; point at the survey's photo folder")
    return sorted({p.resolve() for p in found})


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of a whole image as it is displayed, i.e. after its EXIF orientation; ImageProblem otherwise."""
    width, height = check_image(path)
    with Image.open(path) as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _SWAPPED_ORIENTATIONS else (width, height)


@dataclass(frozen=True)
class LocalImage:
    """One readable photo: where it is, its displayed size and its content hash."""

    path: Path
    width: int
    height: int
    sha256: str


@dataclass
class PhotoImportSummary:
    """What one import of photos did, for the table it ends with."""

    added: int = 0
    refreshed: int = 0
    unchanged: int = 0
    unreadable: list[str] = field(default_factory=list)  # "<path>: why"
    unnamed: int = 0  # photos whose names do not follow the file-name pattern (no site/year/quadrat)

    def format(self) -> str:
        rows = [
            ("photos added", self.added),
            ("photos changed since the last import (refreshed)", self.refreshed),
            ("photos unchanged (skipped)", self.unchanged),
            ("photos unreadable (left out)", len(self.unreadable)),
            ("photos without site/year/quadrat in the name", self.unnamed),
        ]
        parts = [format_table(["", "count"], rows)]
        if self.unreadable:
            parts.append(format_table(["unreadable photo", ""], [(line, "") for line in self.unreadable]))
        return "\n\n".join(parts)


def probe(paths: Sequence[Path], summary: PhotoImportSummary) -> list[LocalImage]:
    """The readable photos among `paths`, with sizes and hashes; the others are listed in `summary`."""
    readable = []
    for path in paths:
        try:
            width, height = displayed_size(path)
            readable.append(LocalImage(path, width, height, sha256_file(path)))
        except ImageProblem as problem:
            summary.unreadable.append(f"{path}: {problem}")
        except OSError as error:
            summary.unreadable.append(f"{path}: {error.strerror or error}")
    return readable


def sample_fields(image: LocalImage, filename_pattern: str) -> dict[str, object]:
    """The sample fields of a photo: its hash and what its name says of site, year and quadrat."""
    quadrat = parse_quadrat_name(image.path.name, filename_pattern)
    return {
        contract.IMAGE_SHA256: image.sha256,
        contract.SITE: quadrat.site,
        contract.YEAR: contract.stored_year(quadrat.year),
        contract.QUADRAT_ID: quadrat.quadrat,
    }


def write_photos(
    dataset_name: str, images: Sequence[LocalImage], filename_pattern: str, overwrite: bool, summary: PhotoImportSummary
) -> None:
    """Add new photos to the dataset and refresh those whose content changed; samples of other files stay."""
    import fiftyone as fo

    from data_engineering.fiftyone_writer import open_dataset

    dataset = open_dataset(dataset_name, overwrite=overwrite)
    known: dict[str, tuple[str, str | None]] = {}
    if len(dataset):
        hashes = (
            dataset.values(contract.IMAGE_SHA256)
            if dataset.has_sample_field(contract.IMAGE_SHA256)
            else [None] * len(dataset)
        )
        known = {
            path: (sample_id, digest)
            for path, sample_id, digest in zip(dataset.values("filepath"), dataset.values("id"), hashes)
        }
    new, changed = [], []
    for image in images:
        fields = sample_fields(image, filename_pattern)
        metadata = fo.ImageMetadata(width=image.width, height=image.height)
        if str(image.path) not in known:
            new.append(fo.Sample(filepath=str(image.path), metadata=metadata, **fields))
        elif known[str(image.path)][1] != image.sha256:
            changed.append((known[str(image.path)][0], metadata, fields))
        else:
            summary.unchanged += 1
    if new:
        dataset.add_samples(new, dynamic=True, progress=False)
        summary.added += len(new)
    for sample_id, metadata, fields in changed:
        sample = dataset[sample_id]
        sample.metadata = metadata
        for name, value in fields.items():
            sample[name] = value
        sample.save()
        summary.refreshed += 1
    summary.unnamed += sum(1 for image in images if parse_quadrat_name(image.path.name, filename_pattern).site is None)


def import_images_command(source: str, dataset_name: str, overwrite: bool = False) -> None:
    """Add survey photos that were never in CVAT to a persistent FiftyOne dataset, to predict them.

    Args:
        source: a folder of photos (searched recursively) or a glob pattern such as "surveys/2024/*.jpg".
        dataset_name: the FiftyOne dataset (made if missing; photos already in it are skipped unless changed).
        overwrite: replace an existing dataset of that name that something else made.
    """
    from common.settings import load_settings

    settings = load_settings()
    paths = find_images(source)
    summary = PhotoImportSummary()
    images = probe(paths, summary)
    if not images:
        raise UserError(f"none of the {len(paths)} image file(s) in {source} could be read: {summary.unreadable[0]}")
    write_photos(dataset_name, images, settings.filename_pattern, overwrite, summary)
    print(summary.format())


def main() -> None:
    """Entry point of data_engineering/import_images.py."""
    run(import_images_command)
