"""Survey photos never in CVAT -> FiftyOne in place: sizes after EXIF orientation, reruns add only what is new."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from common.settings import REPO_ROOT
from data_engineering import dataset_contract as contract
from data_engineering.local_images import (
    PhotoImportSummary,
    displayed_size,
    find_images,
    probe,
    write_photos,
)

PATTERN = "{site}_{year}_{quadrat}"


def photo(path: Path, value: int, size=(40, 30), orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))
    if orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, exif=exif)
    return path


@pytest.fixture
def survey(tmp_path: Path) -> Path:
    folder = tmp_path / "survey 2024"
    photo(folder / "MooreaE2B_2024_01.jpg", 10)
    photo(folder / "sub" / "MooreaE2B_2024_02.jpg", 20, orientation=6)  # taken in portrait: shown 30 x 40
    photo(folder / "IMG_0003.png", 30)
    broken = photo(folder / "MooreaE2B_2024_04.jpg", 40, size=(400, 300))
    broken.write_bytes(broken.read_bytes()[:300])  # truncated on the card
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_find_images_folder_glob_and_nothing(survey: Path, tmp_path: Path):
    assert [p.name for p in find_images(survey)] == [
        "IMG_0003.png",
        "MooreaE2B_2024_01.jpg",
        "MooreaE2B_2024_04.jpg",
        "MooreaE2B_2024_02.jpg",
    ]
    assert [p.name for p in find_images(str(survey / "*.jpg"))] == ["MooreaE2B_2024_01.jpg", "MooreaE2B_2024_04.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        find_images(tmp_path / "empty")
    with pytest.raises(UserError, match="neither a folder"):
        find_images(tmp_path / "missing")


def test_exif_orientation_decides_the_size(survey: Path):
    assert displayed_size(survey / "MooreaE2B_2024_01.jpg") == (40, 30)
    assert displayed_size(survey / "sub" / "MooreaE2B_2024_02.jpg") == (30, 40)


def test_import_then_rerun_adds_only_new_and_changed(survey: Path, dataset_name: str):
    summary = PhotoImportSummary()
    images = probe(find_images(survey), summary)
    assert len(images) == 3 and len(summary.unreadable) == 1 and "MooreaE2B_2024_04.jpg" in summary.unreadable[0]
    write_photos(dataset_name, images, PATTERN, False, summary)
    assert (summary.added, summary.unchanged, summary.unnamed) == (3, 0, 1)
    dataset = fo.load_dataset(dataset_name)
    by_name = {Path(s.filepath).name: s for s in dataset}
    rotated = by_name["MooreaE2B_2024_02.jpg"]
    assert (rotated.metadata.width, rotated.metadata.height) == (30, 40)
    assert (rotated[contract.SITE], rotated[contract.YEAR], rotated[contract.QUADRAT_ID]) == ("MooreaE2B", "2024", "02")
    assert by_name["IMG_0003.png"][contract.SITE] is None
    assert Path(rotated.filepath) == survey.resolve() / "sub" / "MooreaE2B_2024_02.jpg"  # in place, not copied
    ids = {s.filepath: s.id for s in dataset}

    photo(survey / "MooreaE2B_2024_01.jpg", 99)  # re-exported from the camera: new content, same name
    photo(survey / "MooreaE2B_2024_05.jpg", 50)
    again = PhotoImportSummary()
    write_photos(dataset_name, probe(find_images(survey), again), PATTERN, False, again)
    assert (again.added, again.refreshed, again.unchanged) == (1, 1, 2)
    dataset = fo.load_dataset(dataset_name)
    assert len(dataset) == 4
    assert all(
        ids[path] == sample_id
        for path, sample_id in zip(dataset.values("filepath"), dataset.values("id"))
        if path in ids
    )
    changed = dataset.match(fo.ViewField("filepath").ends_with("MooreaE2B_2024_01.jpg")).first()
    from common.fileio import sha256_file

    assert changed[contract.IMAGE_SHA256] == sha256_file(survey / "MooreaE2B_2024_01.jpg")


def test_command_line(survey: Path, dataset_name: str, tmp_path: Path):
    script = REPO_ROOT / "data_engineering" / "import_images.py"
    done = subprocess.run(
        [sys.executable, str(script), str(survey), "--dataset-name", dataset_name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "photos added" in done.stdout and "truncated or damaged" in done.stdout
    assert len(fo.load_dataset(dataset_name)) == 3
    (tmp_path / "nothing").mkdir()
    refused = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nothing"), "--dataset-name", dataset_name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "no image files" in refused.stderr and "Traceback" not in refused.stderr
