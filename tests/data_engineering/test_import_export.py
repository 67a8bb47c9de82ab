"""CVAT-for-images 1.1 exports -> FiftyOne: sub-pixel points and z_order kept, bad input refused or reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from cvat_sdk.masks import encode_mask
from fiftyone import ViewField as F
from PIL import Image

from common.cli import UserError
from common.settings import REPO_ROOT, load_settings
from data_engineering import dataset_contract as contract
from data_engineering.demo_data import make_demo_export
from data_engineering.import_export import import_cvat_export
from prepare.rasterize import Shape, polygon_from_rings, rasterize_shapes, to_pixels


def jpeg(path: Path, value: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def polygon(label: str, points: str, z_order: int = 0, confidence: str | None = None) -> str:
    attribute = f'<attribute name="confidence">{confidence}</attribute>' if confidence else ""
    return f'<polygon label="{label}" source="manual" occluded="0" points="{points}" z_order="{z_order}">{attribute}</polygon>'


def project_xml(images: list[tuple[str, str, int, str]], project: str = "Reef") -> str:
    """A project export's annotations.xml: images as (name, subset, task_id, shapes xml)."""
    tasks = "".join(
        f"<task><id>{t}</id><name>task {t}</name><updated>2024-0{t}-01</updated><subset>{s}</subset></task>"
        for t, s in sorted({(t, s) for _, s, t, _ in images})
    )
    body = "".join(
        f'<image id="{i}" name="{n}" subset="{s}" task_id="{t}" width="40" height="30">{shapes}</image>'
        for i, (n, s, t, shapes) in enumerate(images)
    )
    return f"<annotations><version>1.1</version><meta><project><name>{project}</name><tasks>{tasks}</tasks></project></meta>{body}</annotations>"


def task_xml(shapes: str, name: str = "Moorea_2021_03.jpg") -> str:
    return (
        "<annotations><version>1.1</version><meta><task><id>9</id><name>quadrats</name><updated>2024-05-01</updated>"
        f'<subset>Validation</subset></task></meta><image id="0" name="{name}" width="40" height="30">{shapes}</image></annotations>'
    )


@pytest.fixture
def settings(tmp_path):
    return load_settings(media_dir=tmp_path / "media")


def test_task_export_keeps_sub_pixel_points_z_order_and_attributes(tmp_path, settings, dataset_name):
    export = tmp_path / "task_export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 90)
    shapes = polygon("Porites", "10.37,5.25;30.5,5.25;20.01,25.99", z_order=3, confidence="87") + polygon(
        "Acropora", "-3,-3;50,0;20,40", z_order=1
    )
    shapes += '<box label="Porites" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"></box>'
    (export / "annotations.xml").write_text(task_xml(shapes))
    summary = import_cvat_export(export, dataset_name, settings)
    sample = fo.load_dataset(dataset_name).first()
    porites, acropora = sample[contract.GT_FIELD].polylines
    assert np.allclose(
        porites.points[0], [[10.37 / 40, 5.25 / 30], [30.5 / 40, 5.25 / 30], [20.01 / 40, 25.99 / 30]], atol=1e-12
    )
    assert (porites.z_order, porites.confidence, acropora.z_order, acropora.confidence) == (3, 0.87, 1, None)
    assert acropora.points[0] == [[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]]  # clipped to the image
    assert sample.tags == ["val"] and (sample.cvat_task_id, sample.cvat_task_name, sample.site, sample.year) == (
        9,
        "quadrats",
        "Moorea",
        "2021",
    )
    folder = fo.load_dataset(dataset_name).info[contract.INFO_MEDIA_FOLDER]
    assert (
        folder.startswith(f"{dataset_name}-")
        and Path(sample.filepath) == settings.media_dir / folder / "task_9" / "Moorea_2021_03.jpg"
    )
    assert summary.skipped == {"rectangle": 1} and summary.clipped == 1


def test_demo_project_zip_imports_every_task_and_reimport_duplicates_nothing(tmp_path, settings, dataset_name):
    export = make_demo_export(tmp_path / "demo", num_images=6, size=96, colonies=3, seed=1)
    archive = Path(shutil.make_archive(str(tmp_path / "demo_export"), "zip", export))
    summary = import_cvat_export(archive, dataset_name, settings)
    dataset = fo.load_dataset(dataset_name)
    assert len(dataset) == 6 and summary.images == 6 and not summary.images_skipped
    assert dataset.count_sample_tags() == {"train": 3, "val": 3}
    assert dataset.distinct(contract.CVAT_PROJECT_NAME) == ["synthetic_reef"]
    z_orders = [sorted(p.z_order for p in s[contract.GT_FIELD].polylines) for s in dataset]
    assert all(z == list(range(len(z))) for z in z_orders) and sum(map(len, z_orders)) == sum(summary.polygons.values())
    copied = next(settings.media_dir.rglob("*.jpg"))
    before = copied.stat().st_mtime_ns
    import_cvat_export(archive, dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 6 and copied.stat().st_mtime_ns == before  # copies kept, not redone
    assert fo.load_dataset(dataset_name).info[contract.INFO_CVAT_TASKS].keys() == {
        "1",
        "2",
        "3",
    }  # Test is listed, empty


def test_two_tasks_with_the_same_file_name_are_kept_apart(tmp_path, settings, dataset_name):
    export = tmp_path / "project"
    jpeg(export / "images" / "Train" / "a.jpg", 10)
    jpeg(export / "images" / "Test" / "a.jpg", 200)
    square = polygon("Fungia", "1,1;20,1;20,20")
    (export / "annotations.xml").write_text(project_xml([("a.jpg", "Train", 1, square), ("a.jpg", "Test", 2, square)]))
    import_cvat_export(export, dataset_name, settings)
    paths = {s.cvat_task_id: Path(s.filepath) for s in fo.load_dataset(dataset_name)}
    assert paths[1] != paths[2]
    assert [int(np.asarray(Image.open(paths[t])).mean()) for t in (1, 2)] == pytest.approx([10, 200], abs=2)


def test_missing_and_unreadable_images_are_skipped_and_reported(tmp_path, settings, dataset_name):
    export = tmp_path / "project"
    jpeg(export / "images" / "Train" / "good.jpg", 50)
    (export / "images" / "Train" / "broken.jpg").write_bytes(b"not a jpeg at all")
    square = polygon("Fungia", "1,1;20,1;20,20")
    images = [("good.jpg", "Train", 1, square), ("broken.jpg", "Train", 1, square), ("gone.jpg", "Train", 1, square)]
    (export / "annotations.xml").write_text(project_xml(images))
    summary = import_cvat_export(export, dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 1
    assert sorted(line.split(":")[0] for line in summary.images_skipped) == ["task 1/broken.jpg", "task 1/gone.jpg"]
    assert "unreadable" in summary.format() and "not found" in summary.format()
    (export / "images" / "Train" / "good.jpg").unlink()
    with pytest.raises(UserError, match="none of the 3 images"):
        import_cvat_export(export, dataset_name, settings)


def test_images_beside_an_annotations_only_archive_are_found(tmp_path, settings, dataset_name):
    jpeg(tmp_path / "images" / "Train" / "a.jpg", 50)
    with zipfile.ZipFile(tmp_path / "annotations_only.zip", "w") as archive:
        archive.writestr("annotations.xml", project_xml([("a.jpg", "Train", 1, polygon("Fungia", "1,1;20,1;20,20"))]))
    import_cvat_export(tmp_path / "annotations_only.zip", dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 1


@pytest.mark.parametrize("entry", ["../evil.jpg", "/tmp/evil.jpg", "images/../../evil.jpg"])
def test_archive_entries_that_would_escape_are_refused(tmp_path, settings, dataset_name, entry):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("annotations.xml", project_xml([("a.jpg", "Train", 1, "")]))
        archive.writestr(zipfile.ZipInfo(entry), b"x")
    with pytest.raises(UserError, match="outside the media folder"):
        import_cvat_export(tmp_path / "bad.zip", dataset_name, settings)
    assert not fo.dataset_exists(dataset_name)


@pytest.mark.parametrize("name", ["../escape.jpg", "/abs/escape.jpg"])
def test_file_names_that_would_escape_are_refused_before_anything_is_written(tmp_path, settings, dataset_name, name):
    export = tmp_path / "export"
    jpeg(export / "images" / "ok.jpg", 50)
    images = [("ok.jpg", "Train", 1, ""), (name, "Train", 1, "")]
    (export / "annotations.xml").write_text(project_xml(images))
    with pytest.raises(UserError, match="outside the media folder"):
        import_cvat_export(export, dataset_name, settings)
    assert not fo.dataset_exists(dataset_name) and not settings.media_dir.exists()


def test_label_with_an_empty_name_is_a_clear_error(tmp_path, settings, dataset_name):
    export = tmp_path / "export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 50)
    (export / "annotations.xml").write_text(task_xml(polygon("", "1,1;20,1;20,20")))
    with pytest.raises(UserError, match="empty name"):
        import_cvat_export(export, dataset_name, settings)
    assert not fo.dataset_exists(dataset_name)


def test_cli_refuses_a_dataset_made_by_something_else_unless_overwrite(tmp_path, dataset_name):
    export = tmp_path / "export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 50)
    (export / "annotations.xml").write_text(task_xml(polygon("Porites", "1,1;20,1;20,20")))
    fo.Dataset(dataset_name, persistent=True).add_sample(fo.Sample(filepath="/elsewhere/x.jpg"))
    command = [
        sys.executable,
        str(REPO_ROOT / "data_engineering" / "import_cvat_export.py"),
        str(export),
        "--dataset-name",
        dataset_name,
        "--media-dir",
        str(tmp_path / "media"),
    ]
    refused = subprocess.run(
        command, capture_output=True, text=True, env=os.environ | {"FIFTYONE_SHOW_PROGRESS_BARS": "false"}
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "not made by reefseg" in refused.stderr.strip().splitlines()[-1]
    done = subprocess.run(command + ["--overwrite"], capture_output=True, text=True, cwd=REPO_ROOT / "data_engineering")
    assert done.returncode == 0, done.stderr
    assert "Porites" in done.stdout
    dataset = fo.load_dataset(dataset_name)
    dataset.reload()
    assert len(dataset) == 1 and dataset.first().cvat_task_id == 9


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotations><meta><task><id>1</id></task></meta><image id='0' name='a.jpg'", "not a valid"),
        (
            "<annotations><meta><task><id>1</id></task></meta><track id='0' label='Porites'></track></annotations>",
            "CVAT for video",
        ),
    ],
)
def test_broken_or_video_annotations_are_a_clear_error(tmp_path, settings, dataset_name, xml, message):
    (tmp_path / "annotations.xml").write_text(xml)
    with pytest.raises(UserError, match=message):
        import_cvat_export(tmp_path / "annotations.xml", dataset_name, settings)


def test_reimporting_an_unchanged_export_keeps_its_samples_and_a_changed_task_is_replaced(
    tmp_path, settings, dataset_name
):
    export = tmp_path / "export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 50)
    jpeg(export / "images" / "Moorea_2021_04.jpg", 60)
    shapes = {
        "Moorea_2021_03.jpg": polygon("Porites", "1,1;20,1;20,20"),
        "Moorea_2021_04.jpg": polygon("Acropora", "2,2;30,2;30,25"),
    }

    def write(changed: str = "") -> None:
        images = [
            (name, "Train", task, shape.replace("20,20", changed) if changed and task == 1 else shape)
            for task, (name, shape) in enumerate(shapes.items(), start=1)
        ]
        (export / "annotations.xml").write_text(project_xml(images))

    write()
    first = import_cvat_export(export, dataset_name, settings)
    ids = set(fo.load_dataset(dataset_name).values("id"))
    assert first.tasks_unchanged == 0 and len(ids) == 2

    again = import_cvat_export(export, dataset_name, settings)
    assert again.tasks_unchanged == 2
    assert set(fo.load_dataset(dataset_name).values("id")) == ids

    write(changed="21.5,19.25")
    edited = import_cvat_export(export, dataset_name, settings)
    dataset = fo.load_dataset(dataset_name)
    assert edited.tasks_unchanged == 1 and len(dataset) == 2
    assert len(set(dataset.values("id")) & ids) == 1  # only the edited task's sample was replaced
    porites = dataset.match({"cvat_task_id": 1}).first()[contract.GT_FIELD].polylines[0]
    assert porites.points[0][2] == pytest.approx((21.5 / 40, 19.25 / 30))


def _bmp(path: Path, value: int) -> bytes:
    """An uncompressed image: every pixel value gives a file of the same byte size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(path, "BMP")
    return path.read_bytes()


def test_two_datasets_from_same_named_projects_never_share_media(tmp_path, settings):
    names = [f"test_reef_{i}_{os.getpid()}" for i in range(2)]
    for name, value in zip(names, (10, 200)):
        export = tmp_path / name
        jpeg(export / "images" / "Train" / "a.jpg", value)
        (export / "annotations.xml").write_text(
            project_xml([("a.jpg", "Train", 1, polygon("Fungia", "1,1;20,1;20,20"))])
        )
        import_cvat_export(export, name, settings)  # both exports are of a project called "Reef", task 1, a.jpg
    first, second = (fo.load_dataset(name).first() for name in names)
    assert first.filepath != second.filepath
    assert [int(np.asarray(Image.open(s.filepath)).mean()) for s in (first, second)] == pytest.approx([10, 200], abs=2)
    for name in names:
        fo.delete_dataset(name)


def test_a_changed_photo_of_the_same_size_is_copied_and_never_replaces_the_old_file(tmp_path, settings, dataset_name):
    export = tmp_path / "export"
    old = _bmp(export / "images" / "Train" / "a.bmp", 10)
    (export / "annotations.xml").write_text(project_xml([("a.bmp", "Train", 1, polygon("Fungia", "1,1;20,1;20,20"))]))
    import_cvat_export(export, dataset_name, settings)
    first_path = Path(fo.load_dataset(dataset_name).first().filepath)
    new = _bmp(export / "images" / "Train" / "a.bmp", 200)
    assert len(new) == len(old) and new != old
    (export / "annotations.xml").write_text(project_xml([("a.bmp", "Train", 1, polygon("Fungia", "1,1;20,1;20,21"))]))
    import_cvat_export(export, dataset_name, settings)
    second_path = Path(fo.load_dataset(dataset_name).first().filepath)
    assert first_path.read_bytes() == old  # whoever still points at it keeps the photo they had
    assert second_path != first_path and second_path.read_bytes() == new and second_path.name == "a.bmp"
    import_cvat_export(export, dataset_name, settings)
    assert (
        Path(fo.load_dataset(dataset_name).first().filepath) == second_path
    )  # found again by its content: nothing re-copied


def _png_with_flipped_pixel_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10] ^= 0xFF  # inside the compressed pixels: same size, damaged content
    path.write_bytes(bytes(data))


def test_a_damaged_photo_of_the_same_size_is_not_reused(tmp_path, settings, dataset_name):
    export = tmp_path / "export"
    image = export / "images" / "Train" / "a.png"
    jpeg(image, 90)  # saved as PNG: the suffix decides
    (export / "annotations.xml").write_text(project_xml([("a.png", "Train", 1, polygon("Fungia", "1,1;20,1;20,20"))]))
    import_cvat_export(export, dataset_name, settings)
    good = Path(fo.load_dataset(dataset_name).first().filepath).read_bytes()
    _png_with_flipped_pixel_byte(image)
    assert image.stat().st_size == len(good)
    (export / "annotations.xml").write_text(project_xml([("a.png", "Train", 1, polygon("Fungia", "1,1;20,1;20,21"))]))
    with pytest.raises(UserError, match="none of the 1 images"):
        import_cvat_export(export, dataset_name, settings)
    assert Path(fo.load_dataset(dataset_name).first().filepath).read_bytes() == good


def _import_one(tmp_path, settings, dataset_name, write_image, xml_size=(40, 30), name="b.jpg"):
    """Import a task with a good image and one written by `write_image(path)`; returns the summary's line for the latter."""
    export = tmp_path / "export"
    jpeg(export / "images" / "Train" / "good.jpg", 50)
    write_image(export / "images" / "Train" / name)
    square = polygon("Fungia", "1,1;20,1;20,20")
    xml = project_xml([("good.jpg", "Train", 1, square), (name, "Train", 1, square)])
    (export / "annotations.xml").write_text(
        xml.replace(
            f'name="{name}" subset="Train" task_id="1" width="40" height="30"',
            f'name="{name}" subset="Train" task_id="1" width="{xml_size[0]}" height="{xml_size[1]}"',
        )
    )
    summary = import_cvat_export(export, dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 1 and summary.images == 1
    [line] = summary.images_skipped
    assert line.startswith(f"task 1/{name}: ")
    assert not [p for p in settings.media_dir.rglob("*") if p.is_file() and p.name != "good.jpg"]  # nothing else copied
    return line


def _truncated_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _png_bomb(path: Path) -> None:
    """A valid PNG header claiming 40000 x 40000 pixels (1.6 gigapixels) and almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "unreadable: it does not decode completely"),
        ("empty", "unreadable: it is empty or not an image file"),
        ("bomb", "more than the 200 megapixels an image may have"),
        ("size", "annotations.xml gives 80x60 but the file is 40x30"),
    ],
)
def test_images_that_cannot_be_used_are_skipped_with_the_reason(tmp_path, settings, dataset_name, case, expected):
    write = {
        "truncated": _truncated_jpeg,
        "empty": lambda p: p.write_bytes(b""),
        "bomb": _png_bomb,
        "size": lambda p: jpeg(p, 90),
    }[case]
    name = "b.png" if case == "bomb" else "b.jpg"
    line = _import_one(
        tmp_path, settings, dataset_name, write, xml_size=(80, 60) if case == "size" else (40, 30), name=name
    )
    assert expected in line


def test_a_file_name_longer_than_the_file_system_allows_is_skipped(tmp_path, settings, dataset_name):
    long_name = "é" * 126 + ".jpg"  # 256 bytes in UTF-8
    export = tmp_path / "export"
    jpeg(export / "images" / "Train" / "good.jpg", 50)
    square = polygon("Fungia", "1,1;20,1;20,20")
    (export / "annotations.xml").write_text(
        project_xml([("good.jpg", "Train", 1, square), (long_name, "Train", 1, square)])
    )
    summary = import_cvat_export(export, dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 1
    assert summary.images_skipped == [
        f"task 1/{long_name}: its file name has a part of 256 bytes, longer than the 255 a file system allows; rename it in CVAT"
    ]
    fits = "é" * 125 + ".jpg"  # 254 bytes: the longest names still import (the temporary copy's name is shortened)
    jpeg(export / "images" / "Train" / fits, 60)
    (export / "annotations.xml").write_text(project_xml([("good.jpg", "Train", 1, square), (fits, "Train", 1, square)]))
    assert import_cvat_export(export, dataset_name, settings).images_skipped == []
    assert len(fo.load_dataset(dataset_name)) == 2


def test_symlinks_in_an_export_folder_are_never_followed(tmp_path, settings, dataset_name):
    outside = tmp_path / "outside"
    jpeg(outside / "secret.jpg", 77)
    jpeg(outside / "photos" / "c.jpg", 77)
    export = tmp_path / "export"
    jpeg(export / "images" / "Train" / "good.jpg", 50)
    (export / "images" / "Train" / "passwd.jpg").symlink_to("/etc/passwd")
    (export / "images" / "Train" / "b.jpg").symlink_to(outside / "secret.jpg")
    (export / "images" / "Train" / "linked").symlink_to(outside / "photos", target_is_directory=True)
    square = polygon("Fungia", "1,1;20,1;20,20")
    names = ["good.jpg", "passwd.jpg", "b.jpg", "linked/c.jpg"]
    (export / "annotations.xml").write_text(project_xml([(n, "Train", 1, square) for n in names]))
    summary = import_cvat_export(export, dataset_name, settings)
    assert len(fo.load_dataset(dataset_name)) == 1
    assert sorted(summary.images_skipped) == sorted(
        f"task 1/{n}: a symbolic link in the export, never followed; put the image file itself in the export"
        for n in names[1:]
    )
    assert [p.name for p in settings.media_dir.rglob("*") if p.is_file()] == ["good.jpg"]


def test_symlink_entries_in_an_export_zip_are_never_followed(tmp_path, settings, dataset_name):
    import stat

    jpeg(tmp_path / "good.jpg", 50)
    square = polygon("Fungia", "1,1;20,1;20,20")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as archive:
        archive.writestr(
            "annotations.xml", project_xml([("good.jpg", "Train", 1, square), ("passwd.jpg", "Train", 1, square)])
        )
        archive.write(tmp_path / "good.jpg", "images/Train/good.jpg")
        link = zipfile.ZipInfo("images/Train/passwd.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    summary = import_cvat_export(tmp_path / "export.zip", dataset_name, settings)
    assert summary.images_skipped == [
        "task 1/passwd.jpg: a symbolic link in the export, never followed; put the image file itself in the export"
    ]
    assert [p.name for p in settings.media_dir.rglob("*") if p.is_file()] == ["good.jpg"]


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        (
            "1,1;20,1;nan,20",
            "polygon number 2 (label 'Porites') of task 9, Moorea_2021_03.jpg has coordinates that are not finite numbers",
        ),
        (
            "1,1;20,1;20,inf",
            "polygon number 2 (label 'Porites') of task 9, Moorea_2021_03.jpg has coordinates that are not finite numbers",
        ),
        (
            "1,1;20,1;20,20;5",
            "in image 'Moorea_2021_03.jpg', a polygon with label 'Porites' has the point '5', which is not one x,y pair",
        ),
        (
            "1,1,20;1,20,20",
            "in image 'Moorea_2021_03.jpg', a polygon with label 'Porites' has the point '1,1,20', which is not one x,y pair",
        ),
    ],
)
def test_polygons_with_nan_or_unpaired_coordinates_are_refused_naming_the_shape(
    tmp_path, settings, dataset_name, points, problem
):
    export = tmp_path / "export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 50)
    (export / "annotations.xml").write_text(
        task_xml(polygon("Acropora", "1,1;20,1;20,20") + polygon("Porites", points))
    )
    with pytest.raises(UserError) as error:
        import_cvat_export(export, dataset_name, settings)
    assert problem in str(error.value)
    assert not fo.dataset_exists(dataset_name)


def test_a_dataset_made_before_media_folders_gets_its_own_and_keeps_its_samples(tmp_path, settings, dataset_name):
    export = tmp_path / "export"
    jpeg(export / "images" / "Train" / "a.jpg", 50)
    (export / "annotations.xml").write_text(project_xml([("a.jpg", "Train", 1, polygon("Fungia", "1,1;20,1;20,20"))]))
    import_cvat_export(export, dataset_name, settings)
    dataset = fo.load_dataset(dataset_name)
    old_folder = dataset.info.pop(contract.INFO_MEDIA_FOLDER)  # as an older version left it
    dataset.save()
    jpeg(export / "images" / "Train" / "b.jpg", 60)
    (export / "annotations.xml").write_text(
        project_xml(
            [
                ("a.jpg", "Train", 1, polygon("Fungia", "1,1;20,1;20,20")),
                ("b.jpg", "Train", 2, polygon("Fungia", "1,1;20,1;20,20")),
            ]
        )
    )
    import_cvat_export(export, dataset_name, settings)
    dataset = fo.load_dataset(dataset_name)
    new_folder = dataset.info[contract.INFO_MEDIA_FOLDER]
    assert new_folder != old_folder and new_folder.startswith(f"{dataset_name}-")
    assert Path(dataset.match({"cvat_task_id": 2}).first().filepath).is_relative_to(settings.media_dir / new_folder)
    assert all(Path(p).is_file() for p in dataset.values("filepath"))


def cvat_mask_element(label: str, bitmap: np.ndarray, z_order: int = 0) -> str:
    """A `<mask>` as CVAT's "CVAT for images 1.1" exporter writes it: the RLE runs joined by ", ", then the box's
    left, top and its width and height (CVAT's points end with the box's inclusive right and bottom)."""
    points = encode_mask(bitmap)
    runs, (left, top, right, bottom) = points[:-4], points[-4:]
    rle = ", ".join(str(int(v)) for v in runs)
    return (
        f'<mask label="{label}" source="manual" occluded="0" rle="{rle}" left="{left}" top="{top}" '
        f'width="{right - left + 1}" height="{bottom - top + 1}" z_order="{z_order}"></mask>'
    )


def test_mask_elements_import_with_their_holes_pixel_for_pixel(tmp_path, settings, dataset_name):
    bitmap = np.zeros((30, 40), dtype=bool)
    bitmap[10:, 25:] = True  # touches the right and bottom borders
    bitmap[15:20, 30:35] = False  # a hole
    export = tmp_path / "task_export"
    jpeg(export / "images" / "Moorea_2021_03.jpg", 90)
    (export / "annotations.xml").write_text(task_xml(cvat_mask_element("Porites", bitmap, z_order=2)))
    summary = import_cvat_export(export, dataset_name, settings)
    [colony] = fo.load_dataset(dataset_name).first()[contract.GT_FIELD].polylines
    assert (colony.label, colony.z_order, len(colony.points)) == ("Porites", 2, 2) and not summary.skipped
    geometry = polygon_from_rings([to_pixels(ring, 40, 30) for ring in colony.points])
    assert (rasterize_shapes([Shape(geometry, 1)], 40, 30).astype(bool) == bitmap).all()


def test_image_subsets_count_when_the_task_has_none_and_optional_fields_exist(tmp_path, settings, dataset_name):
    export = tmp_path / "export"
    for name, subset in (("IMG_1.jpg", "Train"), ("IMG_2.jpg", "Test")):
        jpeg(export / "images" / subset / name, 50)
    xml = (
        "<annotations><version>1.1</version><meta><project><name>Reef</name><tasks><task><id>4</id><name>t</name>"
        "<updated>2024-01-01</updated><subset></subset></task></tasks></project></meta>"
        '<image id="0" name="IMG_1.jpg" subset="Train" task_id="4" width="40" height="30"></image>'
        '<image id="1" name="IMG_2.jpg" subset="Test" task_id="4" width="40" height="30"></image></annotations>'
    )
    (export / "annotations.xml").write_text(xml)
    summary = import_cvat_export(export, dataset_name, settings)
    dataset = fo.load_dataset(dataset_name)
    assert sorted(dataset.values("tags"), key=str) == [["test"], ["train"]] and summary.splits == {
        "train": 1,
        "test": 1,
    }
    assert sorted(dataset.values(contract.CVAT_SUBSET)) == ["Test", "Train"]
    for name in (
        contract.SITE,
        contract.YEAR,
        contract.QUADRAT_ID,
        contract.CVAT_SUBSET,
    ):  # no name matches the pattern
        assert dataset.has_sample_field(name), name
    assert dataset.values(contract.SITE) == [None, None] and dataset.match(F(contract.YEAR) == None).count() == 2  # noqa: E711
