"""Records -> FiftyOne: fields and tags per the contract, ownership, task replacement, incremental dates."""

from __future__ import annotations

from collections import Counter

import fiftyone as fo
import pytest

from common.cli import UserError
from data_engineering import dataset_contract as contract
from data_engineering.fiftyone_writer import (
    ImageRecord,
    ImportSummary,
    SampleOptions,
    TaskRecord,
    media_folder,
    open_dataset,
    task_is_current,
    write_task,
)
from data_engineering.shapes import CvatShape, shapes_to_polygons


def image(tmp_path, name: str, labels=("Acropora", "Porites")) -> ImageRecord:
    shapes = [
        CvatShape(
            "polygon",
            label,
            [10.37 + i, 10, 60, 10, 60, 60],
            z_order=i,
            attributes={"confidence": "90", "health": "ok"},
            shape_id=i,
        )
        for i, label in enumerate(labels)
    ] + [CvatShape("rectangle", "Porites", [0, 0, 5, 5])]
    polygons, skipped = shapes_to_polygons(shapes, width=100, height=80)
    return ImageRecord(tmp_path / name, name, 100, 80, polygons, skipped)


def test_samples_follow_the_contract(tmp_path, dataset_name):
    dataset = open_dataset(dataset_name)
    task = TaskRecord(7, "quadrats A", "Reef", subset="Training", updated_date="2024-01-01T00:00:00Z")
    summary = ImportSummary()
    write_task(
        dataset, task, [image(tmp_path, "Moorea_2021_03.jpg"), image(tmp_path, "IMG_1.jpg")], SampleOptions(), summary
    )
    assert dataset.persistent and len(dataset) == 2
    sample = dataset.match(fo.ViewField(contract.SITE) == "Moorea").first()
    assert sample.tags == ["train"]
    assert (sample.site, sample.year, sample.quadrat_id) == (
        "Moorea",
        "2021",
        "03",
    )  # text: the App shows 2,021 for an int
    assert isinstance(dataset.get_field(contract.YEAR), fo.StringField)
    assert (sample.cvat_project_name, sample.cvat_task_id, sample.cvat_task_name, sample.cvat_subset) == (
        "Reef",
        7,
        "quadrats A",
        "Training",
    )
    assert (sample.metadata.width, sample.metadata.height) == (100, 80)
    first = sample[contract.GT_FIELD].polylines[0]
    assert first.closed and first.filled and first.label == "Acropora"
    assert first.points[0][0] == pytest.approx([0.1037, 0.125])
    assert (first.confidence, first.z_order, first.occluded, first.cvat_shape_id, first.health) == (
        0.9,
        0,
        False,
        0,
        "ok",
    )
    other = dataset.match(fo.ViewField(contract.SITE) == None).first()  # noqa: E711
    assert other.site is None and other.year is None
    assert summary.polygons == Counter({"Acropora": 2, "Porites": 2}) and summary.skipped == {"rectangle": 2}
    assert summary.splits == {"train": 2}
    text = summary.format()
    assert "Acropora" in text and "rectangle" in text


def test_a_dataset_made_when_years_were_ints_gets_text_years_on_the_next_import(tmp_path, dataset_name):
    dataset = open_dataset(dataset_name)
    dataset.add_samples(
        [fo.Sample(filepath=str(tmp_path / f"{year}.jpg"), **{contract.YEAR: year}) for year in (2019, None, 2021)]
    )
    assert isinstance(dataset.get_field(contract.YEAR), fo.IntField)  # as reefseg wrote it before
    task = TaskRecord(3, "t3", "Reef", subset="train", updated_date="2024-01-01")
    write_task(open_dataset(dataset_name), task, [image(tmp_path, "Moorea_2023_01.jpg")], SampleOptions())
    reopened = fo.load_dataset(dataset_name)
    assert isinstance(reopened.get_field(contract.YEAR), fo.StringField)
    assert sorted(reopened.values(contract.YEAR), key=str) == ["2019", "2021", "2023", None]


def test_an_interrupted_year_conversion_is_finished_on_the_next_open(tmp_path, dataset_name):
    dataset = open_dataset(dataset_name)
    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "a.jpg"), **{contract.YEAR: 2019}))
    dataset.add_sample_field("year_as_text", fo.StringField)  # the conversion stopped after deleting the int field
    dataset.set_values("year_as_text", ["2019"])
    dataset.delete_sample_field(contract.YEAR)
    reopened = open_dataset(dataset_name)
    assert reopened.values(contract.YEAR) == ["2019"] and not reopened.has_sample_field("year_as_text")


def test_reading_a_year_takes_text_and_the_ints_of_older_datasets():
    assert [contract.read_year(v) for v in ("2023", 2023, " 2021", None, "", "n/a", True)] == [
        2023, 2023, 2021, None, None, None, None,
    ]  # fmt: skip
    assert (contract.stored_year(2023), contract.stored_year(None)) == ("2023", None)


def test_reimporting_a_task_replaces_its_samples_and_records_updated_date(tmp_path, dataset_name):
    dataset = open_dataset(dataset_name)
    options = SampleOptions(gt_field="ground_truth")
    old = TaskRecord(1, "t1", "Reef", subset="val", updated_date="2024-01-01")
    write_task(dataset, old, [image(tmp_path, "a.jpg"), image(tmp_path, "b.jpg")], options)
    write_task(
        dataset,
        TaskRecord(2, "t2", "Reef", subset=None, updated_date="2024-01-01"),
        [image(tmp_path, "c.jpg")],
        options,
    )
    new = TaskRecord(1, "t1", "Reef", subset="val", updated_date="2024-02-01")
    assert task_is_current(dataset, old) and not task_is_current(dataset, new)
    write_task(dataset, new, [image(tmp_path, "a.jpg", labels=("Fungia",))], options)
    reopened = open_dataset(dataset_name)
    assert len(reopened) == 2
    assert sorted(reopened.count_values("cvat_task_id")) == [1, 2]
    assert reopened.count_values("ground_truth.polylines.label") == {"Fungia": 1, "Acropora": 1, "Porites": 1}
    assert reopened.info[contract.INFO_CVAT_TASKS] == {"1": "2024-02-01", "2": "2024-01-01"}
    assert task_is_current(reopened, new)


def test_a_dataset_made_by_something_else_is_refused_unless_overwrite(dataset_name):
    foreign = fo.Dataset(dataset_name, persistent=True)
    foreign.add_sample(fo.Sample(filepath="/x/foreign.jpg"))
    with pytest.raises(UserError, match="not made by reefseg"):
        open_dataset(dataset_name)
    assert len(fo.load_dataset(dataset_name)) == 1
    dataset = open_dataset(dataset_name, overwrite=True)
    assert len(dataset) == 0 and dataset.info[contract.INFO_CREATED_BY] == contract.CREATED_BY


def test_a_media_folder_in_dataset_info_that_is_not_ours_is_refused(dataset_name):
    dataset = open_dataset(dataset_name)
    folder = dataset.info[contract.INFO_MEDIA_FOLDER]
    assert (
        folder.startswith(f"{dataset_name}-") and open_dataset(dataset_name).info[contract.INFO_MEDIA_FOLDER] == folder
    )
    dataset.info[contract.INFO_MEDIA_FOLDER] = "../../elsewhere"
    dataset.save()
    with pytest.raises(UserError, match="not a folder name reefseg made"):
        media_folder(dataset)
