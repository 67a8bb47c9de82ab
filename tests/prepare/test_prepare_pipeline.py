"""The prepared folder: contents, incremental reruns, resuming, and every kind of bad input."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from prepare_testdata import Source, square, write_image

from common.cli import UserError
from prepare import layout, pipeline
from prepare.mask_png import read_mask
from prepare.pipeline import Annotation, SampleRecord, prepare_dataset, print_summary
from prepare.taxonomy import load_taxonomy

ACROPORA, PAVONA, PORITES = 2, 13, 15


def test_folder_contents(source, options, capsys):
    report = prepare_dataset(source.records, source.read, options)
    root = options.output_dir
    assert report.written == 6 and report.info["splits"] == {"train": 3, "val": 2, "test": 1}
    prepared = layout.load_prepared(root)
    assert (
        prepared.classes[0] == "background" and prepared.classes[ACROPORA] == "Acropora" and prepared.num_classes == 17
    )
    assert prepared.palette[ACROPORA] == (60, 180, 75) and len(prepared.palette) == 17
    assert (root / "classes.txt").read_text().splitlines()[PAVONA] == "Pavona/Leptoseris"
    for split in layout.SPLITS:
        assert (root / split / "data").is_dir() and (root / split / "labels").is_dir()
    entry = next(e for e in prepared.entries if e.sample_id == "id1")
    assert (entry.split, entry.image, entry.mask) == ("train", "train/data/img_1.jpg", "train/labels/img_1.png")
    image, mask_path = prepared.image_path(entry), prepared.mask_path(entry)
    assert os.path.samefile(image, source.records[1].filepath)  # hard link, not a re-encoded copy
    mask = read_mask(mask_path)
    assert mask.shape == (30, 40)
    assert {v: int((mask == v).sum()) for v in np.unique(mask)} == {0: 900, ACROPORA: 252, PAVONA: 48}
    assert entry.pixels == {"0": 900, str(ACROPORA): 252, str(PAVONA): 48}
    assert entry.instances == {str(ACROPORA): 1, str(PAVONA): 1}
    assert len(entry.image_sha256) == len(entry.mask_sha256) == 64
    info = json.loads((root / "dataset_info.json").read_text())
    assert info["taxonomy"]["name"] == "finegrained" and info["ignore_index"] == 255 and info["background_index"] == 0
    assert info["class_statistics"]["train"]["pixels"]["Acropora"] == 3 * 252
    assert info["class_statistics"]["train"]["instances"]["Pavona/Leptoseris"] == 1
    assert info["source"] == {"dataset": "reef"} and len(info["rasterization"]["rules"]) >= 5
    assert len((root / "manifest.jsonl").read_text().splitlines()) == 6
    print_summary(report, options.taxonomy, root)
    out = capsys.readouterr().out
    assert "Pavona/Leptoseris" in out and "masks drawn: 6" in out


def test_rerun_with_nothing_changed_does_nothing(source, options, capsys):
    prepare_dataset(source.records, source.read, options)
    masks = sorted(options.output_dir.glob("*/labels/*.png"))
    before = [p.stat().st_mtime_ns for p in masks]
    report = prepare_dataset(source.records, source.read, options)
    assert report.nothing_changed and report.up_to_date == 6 and report.written == 0
    assert [p.stat().st_mtime_ns for p in masks] == before
    print_summary(report, options.taxonomy, options.output_dir)
    assert "nothing changed since the last run" in capsys.readouterr().out


def test_changed_sample_is_the_only_one_redrawn(source, options):
    prepare_dataset(source.records, source.read, options)
    record = source.records[2]
    source.add(record, [square(0.1, 0.1, 0.9, 0.9, "Porites")])
    report = prepare_dataset(source.records, source.read, options)
    assert (report.written, report.up_to_date) == (1, 5)
    mask = read_mask(options.output_dir / "val/labels/img_2.png")
    assert (mask == PORITES).sum() == 32 * 24


def test_taxonomy_edit_redraws_only_samples_it_touches(source, options, tmp_path):
    folder = tmp_path / "taxonomies"
    folder.mkdir()
    fine = (layout.Path(load_taxonomy("finegrained").path)).read_text()
    (folder / "finegrained.yaml").write_text(fine)
    options = replace(options, taxonomy=load_taxonomy("finegrained", [folder]), unknown="ignore")
    source.add(replace(source.records[0]), [square(0.1, 0.1, 0.6, 0.6, "Tubastrea")])
    prepare_dataset(source.records, source.read, options)
    assert (read_mask(options.output_dir / "train/labels/img_0.png") == 255).sum() == 300
    (folder / "finegrained.yaml").write_text(fine.replace("aliases: [Corail mou]", "aliases: [Corail mou, Tubastrea]"))
    report = prepare_dataset(
        source.records, source.read, replace(options, taxonomy=load_taxonomy("finegrained", [folder]))
    )
    assert (report.written, report.up_to_date) == (1, 5)
    assert (read_mask(options.output_dir / "train/labels/img_0.png") == 12).sum() == 300


def test_another_taxonomy_in_the_same_folder_relabels(source, options):
    prepare_dataset(source.records, source.read, options)
    report = prepare_dataset(source.records, source.read, replace(options, taxonomy=load_taxonomy("agnostic")))
    assert report.written == 6
    assert layout.load_prepared(options.output_dir).classes == ["background", "coral"]
    assert (read_mask(options.output_dir / "train/labels/img_1.png") == 1).sum() == 300


def test_new_colours_repaint_without_redrawing(source, options, tmp_path):
    prepare_dataset(source.records, source.read, options)
    folder = tmp_path / "taxonomies"
    folder.mkdir()
    (folder / "finegrained.yaml").write_text(
        load_taxonomy("finegrained").path.read_text().replace("[60, 180, 75]", "[1, 2, 3]")
    )
    report = prepare_dataset(
        source.records, source.read, replace(options, taxonomy=load_taxonomy("finegrained", [folder]))
    )
    assert (report.written, report.recoloured) == (0, 6)
    with Image.open(options.output_dir / "train/labels/img_1.png") as mask:
        assert mask.getpalette()[3 * ACROPORA : 3 * ACROPORA + 3] == [1, 2, 3]
        assert (np.asarray(mask) == ACROPORA).sum() == 252
    assert layout.load_prepared(options.output_dir).palette[ACROPORA] == (1, 2, 3)


def test_split_change_moves_files_and_removed_sample_leaves(source, options):
    prepare_dataset(source.records, source.read, options)
    moved = replace(source.records[0], tags=("test",))
    source.add(moved, source.annotations[moved.sample_id])
    source.records = [r for r in source.records if r.sample_id != "id1"]
    report = prepare_dataset(source.records, source.read, options)
    assert (report.written, report.moved, report.removed) == (0, 1, 1)
    root = options.output_dir
    assert (root / "test/labels/img_0.png").is_file() and (root / "test/data/img_0.jpg").is_file()
    assert not (root / "train/labels/img_0.png").exists() and not (root / "train/data/img_0.jpg").exists()
    assert not (root / "train/labels/img_1.png").exists() and not (root / "train/data/img_1.jpg").exists()
    assert {e.sample_id for e in layout.load_prepared(root).entries} == {r.sample_id for r in source.records}


def test_interrupted_run_resumes(source, options, monkeypatch):
    calls = []
    real = pipeline.make_mask

    def flaky(job):
        calls.append(job.sample_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(pipeline, "make_mask", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(source.records, source.read, options)
    root = options.output_dir
    assert not list(root.rglob("*.part*"))  # atomic writes leave no half-written file
    assert not (root / "manifest.jsonl").exists() and (root / layout.JOURNAL_FILE).is_file()
    monkeypatch.setattr(pipeline, "make_mask", real)
    killed_mid_write = root / "val/labels/.img_2.png.x1y2.part.png"  # what a killed process leaves behind
    killed_mid_write.write_bytes(b"half a png")
    report = prepare_dataset(source.records, source.read, options)
    assert (report.written, report.up_to_date) == (4, 2)
    assert not killed_mid_write.exists()
    assert not (root / layout.JOURNAL_FILE).exists()
    assert len(layout.load_prepared(root).entries) == 6


def test_parallel_workers_write_the_same_masks(source, options, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "IMAGES_PER_WORKER", 1)
    serial = prepare_dataset(source.records, source.read, options)
    parallel = prepare_dataset(source.records, source.read, replace(options, output_dir=tmp_path / "par", workers=2))
    assert sorted(e.mask_sha256 for e in serial.entries) == sorted(e.mask_sha256 for e in parallel.entries)


def test_polygons_are_streamed_not_loaded_all_at_once(source, options, monkeypatch):
    """Memory stays flat in the number of images: a sample's polygons are read just before its mask is drawn."""
    read_ahead = []
    drawn = []
    real = pipeline.make_mask

    def reader(sample_ids):
        for i, item in enumerate(source.read(sample_ids)):
            read_ahead.append(i + 1 - len(drawn))
            yield item

    def counting(job):
        drawn.append(job.sample_id)
        return real(job)

    monkeypatch.setattr(pipeline, "make_mask", counting)
    prepare_dataset(source.records, reader, options)
    assert len(drawn) == 6 and max(read_ahead) == 1


def test_empty_dataset(options):
    with pytest.raises(UserError, match="has no samples"):
        prepare_dataset([], lambda ids: iter(()), options)


def test_missing_image_is_left_out_and_listed(source, options):
    os.remove(source.records[3].filepath)
    report = prepare_dataset(source.records, source.read, options)
    assert report.left_out == {"image file missing": [source.records[3].filepath]}
    assert report.written == 5 and report.empty_splits == ["test"]


def test_image_size_differs_from_recorded(source, options):
    write_image(layout.Path(source.records[0].filepath), 50, 30)
    report = prepare_dataset(source.records, source.read, options)
    (reason,) = report.left_out
    assert "size differs" in reason and report.left_out[reason] == [source.records[0].filepath]
    assert report.written == 5


def test_unreadable_image_is_left_out_and_listed(source, options):
    layout.Path(source.records[2].filepath).write_bytes(b"not a jpeg")
    report = prepare_dataset(source.records, source.read, options)
    assert report.left_out == {"image file unreadable": [source.records[2].filepath]} and report.written == 5


def test_missing_metadata_uses_the_image_size(source, options):
    source.add(replace(source.records[0], width=None, height=None), source.annotations["id0"])
    report = prepare_dataset(source.records, source.read, options)
    entry = next(e for e in report.entries if e.sample_id == "id0")
    assert (entry.width, entry.height) == (40, 30) and entry.pixels["0"] == 900


def test_unknown_label_stops_before_writing(source, options):
    source.add(source.records[0], [square(0.1, 0.1, 0.2, 0.2, "Tubastrea")])
    with pytest.raises(UserError, match=r"'Tubastrea' \(1\).*finegrained.yaml"):
        prepare_dataset(source.records, source.read, options)
    assert not options.output_dir.exists()


def test_unknown_label_as_other(source, options):
    source.add(source.records[0], [square(0.1, 0.1, 0.6, 0.6, "Tubastrea")])
    prepare_dataset(source.records, source.read, replace(options, unknown="other"))
    assert (read_mask(options.output_dir / "train/labels/img_0.png") == 12).sum() == 300


def test_degenerate_and_dropped_polygons_leave_background(source, options):
    line = pipeline.Annotation("Acropora", (np.array([(0.1, 0.1), (0.5, 0.5), (0.3, 0.3)]),))
    source.add(source.records[0], [line, square(0.1, 0.1, 0.6, 0.6, "Empty")])
    report = prepare_dataset(source.records, source.read, options)
    assert report.degenerate == 1
    assert (read_mask(options.output_dir / "train/labels/img_0.png") == 0).all()


def test_no_samples_in_a_split(source, options, capsys):
    for record in source.records:
        source.add(replace(record, tags=("train",)), source.annotations[record.sample_id])
    report = prepare_dataset(source.records, source.read, options)
    assert report.empty_splits == ["val", "test"] and (options.output_dir / "val/labels").is_dir()
    print_summary(report, options.taxonomy, options.output_dir)
    assert "no samples in the val split" in capsys.readouterr().out


def test_untagged_samples_are_listed(source, options):
    source.add(replace(source.records[0], tags=()), source.annotations["id0"])
    report = prepare_dataset(source.records, source.read, options)
    assert report.left_out == {"no train/val/test tag": [source.records[-1].filepath]}
    with pytest.raises(UserError, match="--split-policy grouped"):
        prepare_dataset([replace(r, tags=()) for r in source.records], source.read, options)


def test_grouped_policy(source, options):
    report = prepare_dataset(
        source.records, source.read, replace(options, split_policy="grouped", ratios=(0.5, 0.25, 0.25))
    )
    assert set(report.assignment.values()) == set(layout.SPLITS) and sum(report.info["splits"].values()) == 6
    assert report.info["splits"]["train"] >= 2
    assert report.info["split_policy"] == {"policy": "grouped", "ratios": [0.5, 0.25, 0.25], "seed": 0}


def test_output_folder_holding_something_else(source, options):
    options.output_dir.mkdir(parents=True)
    (options.output_dir / "thesis.docx").write_text("precious")
    with pytest.raises(UserError, match="--overwrite"):
        prepare_dataset(source.records, source.read, options)
    assert (options.output_dir / "thesis.docx").is_file()
    report = prepare_dataset(source.records, source.read, replace(options, overwrite=True))
    assert report.written == 6 and not (options.output_dir / "thesis.docx").exists()


def test_folder_prepared_from_another_dataset_is_refused(source, options):
    prepare_dataset(source.records, source.read, options)
    with pytest.raises(UserError, match="prepared from 'reef'"):
        prepare_dataset(source.records, source.read, replace(options, source={"dataset": "other_reef"}))


def test_same_file_name_in_two_folders(source, options, tmp_path):
    twin = write_image(tmp_path / "elsewhere" / "img_0.jpg", 40, 30, seed=9)
    source.add(SampleRecord("twin", str(twin), 40, 30, ("train",)), source.annotations["id0"])
    report = prepare_dataset(source.records, source.read, options)
    images = sorted(e.image for e in report.entries if e.split == "train")
    assert images == [
        "train/data/img_0__id0.jpg",
        "train/data/img_0__twin.jpg",
        "train/data/img_1.jpg",
        "train/data/img_4.jpg",
    ]


def test_images_copied_when_they_cannot_be_linked(source, options, monkeypatch):
    def no_links(src, dst):
        raise OSError("Invalid cross-device link")

    monkeypatch.setattr(pipeline.os, "link", no_links)
    report = prepare_dataset(source.records, source.read, options)
    entry = report.entries[0]
    copied = options.output_dir / entry.image
    assert not os.path.samefile(copied, entry.source_image)
    assert copied.read_bytes() == layout.Path(entry.source_image).read_bytes()


def test_truncated_and_bomb_images_are_left_out_and_listed(source, options):
    truncated = layout.Path(source.records[1].filepath)
    truncated.write_bytes(
        truncated.read_bytes()[: truncated.stat().st_size // 2]
    )  # PIL's size from the header is still 40x30
    bomb = layout.Path(source.records[4].filepath)
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )
    report = prepare_dataset(source.records, source.read, options)
    assert report.left_out == {
        "image file truncated or damaged (it does not decode completely); export or copy it again": [str(truncated)],
        "image header claims more than 200 megapixels (a decompression bomb or not a quadrat photo)": [str(bomb)],
    }
    assert report.written == 4


def test_a_polygon_with_nan_points_stored_by_an_older_version_is_refused(source, options):
    bad = Annotation("Porites", (np.array([(0.1, 0.1), (np.nan, 0.2), (0.5, 0.5)]),), 1)
    source.add(source.records[1], [*source.annotations["id1"], bad])
    with pytest.raises(UserError) as error:
        prepare_dataset(source.records, source.read, options)
    assert str(error.value).startswith(
        f"sample id1 ({source.records[-1].filepath}) has a 'Porites' polygon with NaN or infinite coordinates"
    )


def test_a_name_too_long_for_the_file_system_once_made_unique_is_one_sentence():
    from common.cli import UserError
    from prepare.pipeline import SampleRecord, _output_names

    long = "q" * 240 + ".jpg"  # fits on disk, but not with `__<sample id>` added to tell two such images apart
    records = [SampleRecord(f"{i:024x}", f"/media/task_{i}/{long}", 8, 8) for i in range(2)]
    with pytest.raises(
        UserError, match="prepared file name for image /media/task_0/q+\\.jpg.* bytes long.*rename the image"
    ):
        _output_names(records)
    assert _output_names(records[:1])[records[0].sample_id] == (long, "q" * 240)


@pytest.mark.parametrize("listed_as", ["background", "drop"])
def test_a_water_polygon_on_a_colony_stays_background_only_when_the_taxonomy_says_so(tmp_path, listed_as):
    folder = tmp_path / "taxonomies"
    folder.mkdir()
    text = (
        load_taxonomy("finegrained")
        .path.read_text(encoding="utf-8")
        .replace(
            "drop: [Empty]",
            f"drop: [Empty{', Water' if listed_as == 'drop' else ''}]\nbackground: [Sand{', Water' if listed_as == 'background' else ''}]",
        )
    )
    (folder / "finegrained.yaml").write_text(text, encoding="utf-8")
    taxonomy = load_taxonomy("finegrained", [folder])
    path = write_image(tmp_path / "media" / "hole.jpg", 40, 30)
    annotations = [
        square(0.0, 0.0, 1.0, 1.0, "Sand"),  # below everything: the background it already is
        square(0.1, 0.1, 0.6, 0.6, "Acropora"),  # 20 x 15 px
        square(0.2, 0.2, 0.3, 0.3, "Water", z_order=1),  # a hole on top of the colony: 4 x 3 px
        square(0.4, 0.4, 0.5, 0.5, "Water"),  # the same z_order, smaller: on top too
    ]
    source = Source(tmp_path / "empty", n=0)
    source.add(SampleRecord("hole", str(path), 40, 30, ("train",), None), annotations)
    options = pipeline.PrepareOptions(taxonomy=taxonomy, output_dir=tmp_path / "out", source={"dataset": "holes"})
    prepare_dataset(source.records, source.read, options)
    prepared = layout.load_prepared(options.output_dir)
    [entry] = prepared.entries
    mask = read_mask(prepared.mask_path(entry))
    holes = 2 * 4 * 3 if listed_as == "background" else 0
    assert int((mask == ACROPORA).sum()) == 20 * 15 - holes and int((mask == 0).sum()) == 40 * 30 - 20 * 15 + holes
    assert entry.instances == {str(ACROPORA): 1}
