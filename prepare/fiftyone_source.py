"""Reads samples and polygons out of a FiftyOne dataset made by data_engineering, and writes split tags back.

Everything is read with `values()` aggregations (one database round trip per chunk of samples)
rather than by loading `Sample` objects one by one; polygons are read in chunks so memory stays
flat in the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import common.settings  # noqa: F401  (exports .env's FIFTYONE_* keys before fiftyone is imported)

# isort: split
import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F
from fiftyone.core.expressions import VALUE

from common import database
from common.cli import UserError
from data_engineering import dataset_contract as contract
from prepare.pipeline import Annotation, SampleRecord

CHUNK_SIZE = 32  # samples whose polygons are read in one database round trip (memory stays flat)


def load_dataset(name: str) -> fo.Dataset:
    return database.load_dataset(name, "import one with data_engineering first")


def _check_gt_field(dataset: fo.Dataset, gt_field: str) -> None:
    if not dataset.has_field(gt_field):
        raise UserError(
            f"dataset {dataset.name!r} has no field {gt_field!r}; set GT_FIELD_NAME to its ground-truth polylines field"
        )


def _values_or_none(dataset: fo.Dataset, paths: Sequence[str]) -> list[list[Any]]:
    """`dataset.values` for several paths; a field the dataset lacks reads as all None."""
    present = [p for p in paths if dataset.has_field(p.split(".")[0])]
    found = dict(zip(present, dataset.values(present))) if present else {}
    return [found.get(p, [None] * len(dataset)) for p in paths]


def read_records(dataset: fo.Dataset, gt_field: str) -> list[SampleRecord]:
    """One light record per sample: path, recorded size, tags, quadrat group and polygon labels."""
    _check_gt_field(dataset, gt_field)
    ids, paths, widths, heights, tags, sites, quadrats, labels = _values_or_none(
        dataset,
        [
            "id",
            "filepath",
            "metadata.width",
            "metadata.height",
            "tags",
            contract.SITE,
            contract.QUADRAT_ID,
            f"{gt_field}.polylines.label",
        ],
    )
    return [
        SampleRecord(
            sample_id=sample_id,
            filepath=path,
            width=width,
            height=height,
            tags=tuple(sample_tags or ()),
            group=(site, quadrat) if quadrat is not None else None,
            labels=tuple(label or "" for label in sample_labels or ()),
            site=None if site is None else str(site),
        )
        for sample_id, path, width, height, sample_tags, site, quadrat, sample_labels in zip(
            ids, paths, widths, heights, tags, sites, quadrats, labels
        )
    ]


def _flat_rings(gt_field: str) -> fo.core.expressions.ViewExpression:
    """Each polyline's rings as flat [x0, y0, x1, y1, ...] lists, flattened by MongoDB: decoding flat lists of
    numbers costs ~15x less CPU than lists of [x, y] pairs, the largest cost of reading a dataset."""
    return F(f"{gt_field}.polylines").map(F("points").map(F().reduce(VALUE.extend(F()), init_val=[])))


def annotation_reader(dataset: fo.Dataset, gt_field: str, chunk_size: int = CHUNK_SIZE):
    """A `read_annotations(sample_ids)` function for `prepare_dataset`, reading `chunk_size` samples at a time."""
    fields = ["_id", f"{gt_field}.polylines.label", _flat_rings(gt_field), f"{gt_field}.polylines.{contract.Z_ORDER}"]

    def read(sample_ids: Sequence[str]) -> Iterator[tuple[str, list[Annotation]]]:
        for start in range(0, len(sample_ids), chunk_size):
            view = dataset.select(sample_ids[start : start + chunk_size], ordered=True)
            # _raw skips mongoengine's per-value conversion (same numbers, several times faster)
            for sample_id, labels, rings, z_orders in zip(*view.values(fields, _raw=True)):
                yield (
                    str(sample_id),
                    [
                        Annotation(
                            label=label or "",
                            rings=tuple(
                                np.asarray(ring, dtype=np.float64).reshape(-1, 2) for ring in polyline_rings or ()
                            ),
                            z_order=int(z or 0),
                        )
                        for label, polyline_rings, z in zip(
                            labels or (), rings or (), z_orders or [None] * len(labels or ())
                        )
                    ],
                )

    return read


def describe(dataset: fo.Dataset, gt_field: str) -> dict[str, Any]:
    """The source as recorded in dataset_info.json: name, field, size and version."""
    return {
        "dataset": dataset.name,
        "gt_field": gt_field,
        "num_samples": len(dataset),
        "last_modified_at": str(dataset.last_modified_at),
        "fiftyone_version": dataset.version,
    }


def write_split_tags(dataset: fo.Dataset, assignment: Mapping[str, str]) -> None:
    """Replace each assigned sample's train/val/test tag with its split (only called under --write-tags)."""
    ids = list(assignment)
    dataset.select(ids).untag_samples(list(contract.SPLIT_TAGS))
    for split in contract.SPLIT_TAGS:
        chosen = [i for i in ids if assignment[i] == split]
        if chosen:
            dataset.select(chosen).tag_samples(split)
