"""Reading samples and polygons out of FiftyOne with values(), and writing split tags back."""

import fiftyone as fo
import pytest
from prepare_testdata import write_image

from common.cli import UserError
from prepare.fiftyone_source import annotation_reader, describe, load_dataset, read_records, write_split_tags


def _polyline(label, x0, z_order=None):
    ring = [(x0, 0.1), (x0 + 0.2, 0.1), (x0 + 0.2, 0.4), (x0, 0.4)]
    extra = {} if z_order is None else {"z_order": z_order}
    return fo.Polyline(label=label, points=[ring], closed=True, filled=True, **extra)


@pytest.fixture
def dataset(dataset_name, tmp_path):
    dataset = fo.Dataset(dataset_name)
    samples = []
    for i in range(5):
        sample = fo.Sample(
            filepath=str(write_image(tmp_path / f"im{i}.jpg", 20, 10)),
            tags=["train"] if i else [],
            site="S",
            quadrat_id=f"Q{i % 2}",
            year=str(2020 + i),
        )
        if i != 4:
            sample["gt_polylines"] = fo.Polylines(
                polylines=[_polyline("Acropora", 0.1, z_order=i), _polyline("Porites", 0.5)]
            )
        samples.append(sample)
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


def test_records(dataset):
    records = read_records(dataset, "gt_polylines")
    assert [r.labels for r in records] == [("Acropora", "Porites")] * 4 + [()]
    assert records[0].width is None  # no metadata computed: the pipeline reads the image size
    assert [r.group for r in records[:3]] == [("S", "Q0"), ("S", "Q1"), ("S", "Q0")]
    assert records[0].tags == () and records[1].tags == ("train",)


def test_annotations_in_chunks(dataset):
    ids = dataset.values("id")[::-1]
    read = annotation_reader(dataset, "gt_polylines", chunk_size=2)
    found = list(read(ids))
    assert [sample_id for sample_id, _ in found] == ids
    by_id = dict(found)
    first = by_id[dataset.first().id]
    assert [a.label for a in first] == ["Acropora", "Porites"]
    assert first[0].rings[0].shape == (4, 2) and first[0].rings[0][1].tolist() == pytest.approx([0.3, 0.1])
    assert [a.z_order for a in by_id[ids[1]]] == [3, 0]  # z_order absent -> 0
    assert by_id[dataset.last().id] == []


def test_missing_fields_and_datasets(dataset):
    with pytest.raises(UserError, match="no field 'gt'"):
        read_records(dataset, "gt")
    with pytest.raises(UserError, match="not found"):
        load_dataset("no_such_dataset_here")
    dataset.delete_sample_field("site")
    assert read_records(dataset, "gt_polylines")[0].group == (None, "Q0")


def test_write_split_tags_replaces_old_ones(dataset):
    ids = dataset.values("id")
    dataset.select(ids[1]).tag_samples("reviewed")
    write_split_tags(dataset, {ids[0]: "val", ids[1]: "test"})
    tags = dict(zip(*dataset.values(["id", "tags"])))
    assert tags[ids[0]] == ["val"] and sorted(tags[ids[1]]) == ["reviewed", "test"] and tags[ids[2]] == ["train"]


def test_describe(dataset):
    info = describe(dataset, "gt_polylines")
    assert info["dataset"] == dataset.name and info["num_samples"] == 5 and info["gt_field"] == "gt_polylines"


def test_several_rings_and_integer_points_survive_flattening(dataset, tmp_path):
    rings = [[(0, 0), (0.5, 0), (0.5, 0.5)], [(0.6, 0.6), (1, 0.6), (1, 1), (0.6, 1)]]
    sample = fo.Sample(filepath=str(write_image(tmp_path / "two.jpg", 20, 10)))
    sample["gt_polylines"] = fo.Polylines(
        polylines=[fo.Polyline(label="Acropora", points=rings, closed=True, filled=True)]
    )
    dataset.add_sample(sample)
    ((_, (annotation,)),) = list(annotation_reader(dataset, "gt_polylines")([sample.id]))
    assert [ring.tolist() for ring in annotation.rings] == [[list(p) for p in ring] for ring in rings]
