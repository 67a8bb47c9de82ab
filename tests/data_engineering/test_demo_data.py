"""The synthetic export: deterministic bytes, resumable, CVAT-shaped, and genera that can be told apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from common.settings import REPO_ROOT
from data_engineering.demo_data import LABELS, make_demo_export
from data_engineering.filenames import parse_quadrat_name

GENERA = (
    "Acanthastrea",
    "Acropora",
    "Astreopora",
    "Atrea",
    "Fungia",
    "Goniastrea",
    "Leptastrea",
    "Merulinidae",
    "Millepora",
    "Montastrea",
    "Montipora",
    "Other",
    "Pavona/Leptoseris",
    "Pocillopora",
    "Porites",
    "Psammocora",
)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_flags_give_identical_bytes_and_a_rerun_skips_existing_images(tmp_path):
    first = make_demo_export(tmp_path / "a", num_images=4, size=96, colonies=4, seed=3)
    second = make_demo_export(tmp_path / "b", num_images=4, size=96, colonies=4, seed=3)
    assert files(first) == files(second)
    image = next((first / "images").rglob("*.jpg"))
    umask = os.umask(0)
    os.umask(umask)
    assert image.stat().st_mode & 0o777 == 0o666 & ~umask  # atomic writes keep the usual mode, not mkstemp's 0o600
    before = image.stat().st_mtime_ns
    make_demo_export(first, num_images=4, size=96, colonies=4, seed=3)
    assert image.stat().st_mtime_ns == before and files(first) == files(second)
    other_seed = make_demo_export(tmp_path / "c", num_images=4, size=96, colonies=4, seed=4)
    assert files(other_seed)["annotations.xml"] != files(first)["annotations.xml"]


def test_an_image_does_not_depend_on_how_many_are_asked_for(tmp_path):
    few = files(make_demo_export(tmp_path / "few", num_images=2, size=80, colonies=3))
    many = files(make_demo_export(tmp_path / "many", num_images=5, size=80, colonies=3))
    images = [name for name in few if name.endswith(".jpg")]
    assert len(images) == 2 and all(few[name] == many[name] for name in images)


def test_other_flags_in_the_same_folder_are_refused(tmp_path):
    make_demo_export(tmp_path / "a", num_images=1, size=80, colonies=2)
    with pytest.raises(UserError, match="other flags"):
        make_demo_export(tmp_path / "a", num_images=1, size=96, colonies=2)


def test_export_is_a_cvat_project_with_labels_subsets_and_z_order(tmp_path):
    export = make_demo_export(tmp_path / "demo", num_images=15, size=96, colonies=5)
    root = ElementTree.parse(export / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1"
    labels = [label.findtext("name") for label in root.iter("label")]
    assert set(GENERA) | {"Pavona", "Leptoseris", "Corail mou", "Empty"} == set(labels) == set(LABELS)
    assert all(label.find("attributes/attribute/name").text == "confidence" for label in root.iter("label"))
    tasks = {t.findtext("id"): t.findtext("subset") for t in root.iter("task")}
    assert tasks == {"1": "Train", "2": "Validation", "3": "Test"}
    subsets_of_quadrat: dict[tuple, set] = {}
    for image in root.iter("image"):
        assert (export / "images" / image.get("subset") / image.get("name")).is_file()
        assert tasks[image.get("task_id")] == image.get("subset")
        name = parse_quadrat_name(image.get("name"))
        assert name.site and name.year in (2019, 2021, 2023) and name.quadrat
        subsets_of_quadrat.setdefault((name.site, name.quadrat), set()).add(image.get("subset"))
        polygons = image.findall("polygon")
        assert sorted(int(p.get("z_order")) for p in polygons) == list(range(len(polygons)))
        assert all(0 <= int(p.find("attribute").text) <= 100 for p in polygons)
        coords = np.array(
            [[float(v) for v in pair.split(",")] for p in polygons for pair in p.get("points").split(";")]
        )
        assert coords.min() >= 0 and coords.max() <= 96
    assert all(len(subsets) == 1 for subsets in subsets_of_quadrat.values())  # the years of a quadrat share a split
    assert {s for subsets in subsets_of_quadrat.values() for s in subsets} == {"Train", "Validation", "Test"}


def region_features(export: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per visible colony region: mean and spread of colour and fine detail, keyed by subset."""
    features: dict[str, list[tuple[str, np.ndarray]]] = {}
    for image in ElementTree.parse(export / "annotations.xml").getroot().iter("image"):
        pixels = np.asarray(Image.open(export / "images" / image.get("subset") / image.get("name"))).astype(np.float32)
        owner = np.full(pixels.shape[:2], -1, np.int32)
        polygons = sorted(image.findall("polygon"), key=lambda p: int(p.get("z_order")))
        for index, polygon in enumerate(polygons):
            points = np.array([[float(v) for v in pair.split(",")] for pair in polygon.get("points").split(";")])
            cv2.fillPoly(owner, [np.round(points * 16).astype(np.int32)], index, shift=4)
        gray = pixels.mean(axis=2)
        detail = np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 2))
        for index, polygon in enumerate(polygons):
            inside = owner == index
            if inside.sum() >= 50:
                vector = np.concatenate(
                    [pixels[inside].mean(0) / 255, pixels[inside].std(0) / 64, [detail[inside].mean() / 16]]
                )
                features.setdefault(image.get("subset"), []).append((polygon.get("label"), vector))
    return features


def test_genera_can_be_told_apart_from_their_pixels(tmp_path):
    export = make_demo_export(tmp_path / "demo", num_images=30, size=192, colonies=16)
    features = region_features(export)
    centroids = {}
    for label in {label for label, _ in features["Train"]}:
        centroids[label] = np.mean([v for name, v in features["Train"] if name == label], axis=0)
    held_out = features["Validation"] + features["Test"]
    correct = [min(centroids, key=lambda c: np.linalg.norm(centroids[c] - v)) == label for label, v in held_out]
    assert len(held_out) > 100
    assert np.mean(correct) > 0.6  # nearest colour/texture centroid, 20 labels: chance is ~0.05


def test_cli_writes_under_data_root_by_default(tmp_path):
    env = os.environ | {"DATA_ROOT": str(tmp_path / "data")}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "data_engineering" / "make_demo_data.py"),
            "--num-images",
            "2",
            "--size",
            "64",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "data" / "demo" / "cvat_export" / "images").rglob("*.jpg"))) == 2
    assert "import_cvat_export.py" in done.stdout


def test_photos_only_make_a_survey_nobody_annotated(tmp_path):
    from data_engineering.demo_data import make_demo_data

    make_demo_data(output=str(tmp_path / "survey"), num_images=3, size=64, colonies=2, seed=1, photos_only=True)
    photos = sorted(p.name for p in (tmp_path / "survey").iterdir())
    assert len(photos) == 3 and all(name.endswith(".jpg") for name in photos)
    assert not (tmp_path / "survey" / "annotations.xml").exists()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "survey").iterdir()}
    make_demo_data(output=str(tmp_path / "survey"), num_images=3, size=64, colonies=2, seed=1, photos_only=True)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "survey").iterdir()}  # a rerun rewrites nothing
