"""The per-class IoU group of the App's sidebar: taxonomy order with class names, also on a rerun."""

from __future__ import annotations

import uuid

import fiftyone as fo

from evaluate import writeback
from evaluate.fields import RunFields, class_key

CLASSES = ["Porites", "Acropora", "Pavona_Leptoseris"]  # not alphabetical: the order must come from the taxonomy


def _dataset_with_scores(fields: RunFields) -> fo.Dataset:
    dataset = fo.Dataset(f"test_sidebar_{uuid.uuid4().hex[:8]}")
    scores = fo.DynamicEmbeddedDocument(**{class_key(name): 0.5 for name in CLASSES})
    dataset.add_sample(fo.Sample(filepath="/tmp/quadrat.jpg", **{fields.iou: scores}))
    dataset.add_dynamic_sample_fields()
    return dataset


def _iou_groups(dataset: fo.Dataset, fields: RunFields) -> list[list[str]]:
    return [g.paths for g in dataset.app_config.sidebar_groups if any(p.startswith(f"{fields.iou}.") for p in g.paths)]


def test_iou_group_in_taxonomy_order_first_time_and_on_a_rerun() -> None:
    fields = RunFields.for_run("sidebar_run")
    wanted = [f"{fields.iou}.{class_key(name)}" for name in CLASSES]
    dataset = _dataset_with_scores(fields)
    try:
        writeback.order_sidebar(dataset, fields, CLASSES)
        assert _iou_groups(dataset, fields) == [wanted]
        # A rerun: the saved sidebar groups no longer list the fields (the run's fields were deleted and written again).
        dataset.app_config.sidebar_groups = [
            g for g in dataset.app_config.sidebar_groups if not set(wanted) & set(g.paths)
        ]
        dataset.save()
        writeback.order_sidebar(dataset, fields, CLASSES)
        assert _iou_groups(dataset, fields) == [wanted]
    finally:
        dataset.delete()
