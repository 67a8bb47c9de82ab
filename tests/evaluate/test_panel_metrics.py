"""The numbers FiftyOne's Model Evaluation panel shows, read back from the registered evaluations.

The panel's server side (`plugins.panels.model_evaluation.EvaluationPanel.get_evaluation_data`, FiftyOne's
own code) is called on the registered results, and what it would send the browser is compared with
metrics.json and with `models.metrics` on an independent count.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from evaluate_world import CLASSES, World, evaluate_world
from missed_class import FOUR, FOUR_PALETTE

from common.cli import UserError
from evaluate import panel_metrics, writeback
from evaluate.fields import RunFields, class_key
from evaluate.pipeline import evaluation_dir
from models.metrics import compute_metrics


def panel_data(dataset: Any, eval_key: str) -> dict[str, Any]:
    """What FiftyOne 1.22's Model Evaluation panel computes for one evaluation (its own method, a minimal context)."""
    from plugins.panels.model_evaluation import EvaluationPanel

    state = {"view": {"key": eval_key}}
    ctx = SimpleNamespace(
        dataset=dataset,
        params={},
        panel=SimpleNamespace(get_state=lambda key, default=None: state.get(key, default)),
    )
    return EvaluationPanel().get_evaluation_data(ctx)


def rows(data: dict[str, Any]) -> dict[str, float | None]:
    """The panel's custom-metric rows, label -> value, in the order it lists them."""
    return {row["label"]: row["value"] for row in (data["custom_metrics"] or {}).values()}


def test_the_panel_shows_metrics_json(world: World) -> None:
    import fiftyone as fo

    evaluate_world(world)
    fields = RunFields.for_run(world.run_dir.name)
    saved = json.loads((evaluation_dir(world.run_dir, world.dataset, "val") / "metrics.json").read_text())
    summary, per_class = saved["summary"], saved["per_class"]
    dataset = fo.load_dataset(world.dataset)

    data = panel_data(dataset, fields.eval_key)
    shown = rows(data)
    assert list(shown)[:5] == ["mIoU", "mIoU with background", "fwIoU", "mDice", "Pixel accuracy"]
    assert shown["mIoU"] == pytest.approx(summary["miou"], abs=1e-9)
    assert shown["mIoU with background"] == pytest.approx(summary["miou_with_background"], abs=1e-9)
    assert shown["fwIoU"] == pytest.approx(summary["fwiou"], abs=1e-9)
    assert shown["Pixel accuracy"] == pytest.approx(summary["pixel_accuracy"], abs=1e-9)
    assert list(shown)[5:] == [f"IoU {name}" for name in CLASSES]  # every class, in taxonomy order
    for row in per_class:
        assert float(shown[f"IoU {row['class']}"]) == pytest.approx(row["iou"], abs=1e-6)
    # FiftyOne's own Accuracy row counts background pixels as our pixel accuracy does
    assert data["metrics"]["accuracy"] == pytest.approx(summary["pixel_accuracy"], abs=1e-9)
    assert data["missing"] == writeback.NO_LABEL
    for row in per_class:  # the per-class table: precision and recall (= our accuracy) per class
        assert data["per_class_metrics"][row["class"]]["precision"] == pytest.approx(row["precision"], abs=1e-6)
        assert data["per_class_metrics"][row["class"]]["recall"] == pytest.approx(row["accuracy"], abs=1e-6)
    # every class in taxonomy order, then FiftyOne's "(none)" (no label), empty: every pixel has a class
    assert data["confusion_matrix"]["classes"] == CLASSES + [writeback.NO_LABEL]
    csv = np.loadtxt(
        evaluation_dir(world.run_dir, world.dataset, "val") / "confusion_matrix.csv", delimiter=",", dtype=str
    )
    assert np.array_equal(np.asarray(data["confusion_matrix"]["matrix"])[:3, :3], csv[1:, 1:].astype(np.int64))
    assert not np.asarray(data["confusion_matrix"]["matrix"])[3].any()

    results = dataset.load_evaluation_results(fields.eval_key)  # the Python API reads the same numbers
    assert results.metrics()["miou"] == pytest.approx(summary["miou"], abs=1e-9)
    assert results.metrics()[f"iou_{class_key('Acropora')}"] == pytest.approx(per_class[1]["iou"], abs=1e-6)
    assert dataset.get_evaluation_info(fields.eval_key).config.custom_metrics == panel_metrics.SEGMENTATION_METRICS

    colonies = panel_data(dataset, fields.colony_eval_key)
    assert colonies["confusion_matrix"]["classes"] == ["Acropora", "Porites", "(none)"]


def test_every_class_is_registered_in_taxonomy_order(astreopora_missed, caplog) -> None:
    dataset, ids, fields, expected = astreopora_missed
    matrix, colonies = writeback.run_fiftyone_evaluations(dataset, ids, fields, "four", FOUR, FOUR_PALETTE)
    assert np.array_equal(matrix, expected)
    ours = compute_metrics(expected, FOUR, background_index=0)
    assert ours.iou[3] == 0 and ours.predicted_pixels[3] == 0  # Astreopora: all missed

    results = dataset.load_evaluation_results(fields.eval_key)
    assert list(results.classes) == FOUR  # taxonomy order, not FiftyOne's order of colours
    assert np.array_equal(results.confusion_matrix(), expected)
    data = panel_data(dataset, fields.eval_key)
    assert data["confusion_matrix"]["classes"] == FOUR + [writeback.NO_LABEL]
    assert np.array_equal(np.asarray(data["confusion_matrix"]["matrix"])[:4, :4], expected)
    shown = rows(data)
    assert list(shown)[5:] == [f"IoU {name}" for name in FOUR]
    assert shown["IoU Astreopora"] == "0"  # the panel draws a numeric 0 as "—"
    assert [float(shown[f"IoU {name}"]) for name in FOUR] == pytest.approx(list(ours.iou), abs=1e-12)
    assert shown["mIoU"] == pytest.approx(ours.miou, abs=1e-12)
    assert data["metrics"]["accuracy"] == pytest.approx(ours.pixel_accuracy, abs=1e-12)

    found = panel_data(dataset, fields.colony_eval_key)
    assert found["confusion_matrix"]["classes"] == ["Acropora", "Porites", "Astreopora", "(none)"]
    assert colonies["Astreopora"].fn == 2 and colonies["Astreopora"].tp == 0

    with caplog.at_level(logging.WARNING):
        removed = writeback.delete_run(dataset, fields)
    assert f"evaluation {fields.eval_key}" in removed and not dataset.has_evaluation(fields.eval_key)
    assert "Failed to cleanup metric" not in caplog.text  # the operators were found to clean up


def test_the_review_workspace_shows_every_class_in_the_panels_confusion_matrices(astreopora_missed) -> None:
    import fiftyone as fo
    from plugins.panels.model_evaluation import EvaluationPanel

    dataset, ids, fields, _ = astreopora_missed
    writeback.run_fiftyone_evaluations(dataset, ids, fields, "four", FOUR, FOUR_PALETTE)
    for key in (fields.eval_key, fields.colony_eval_key):  # what the App would leave out: no correct pixel / colony
        shown = panel_data(dataset, key)["confusion_matrix"]
        astreopora = shown["classes"].index("Astreopora")
        row = np.asarray(shown["matrix"])[astreopora]
        assert row.sum() > 0 and row[astreopora] == 0
    writeback.save_review_workspace(dataset, fields)

    space = fo.load_dataset(dataset.name).load_workspace(fields.workspace)
    grid, panel = space.children
    assert grid.type == "Samples" and space.active_child == grid.component_id  # the grid shows first
    assert panel.type == EvaluationPanel().config.name == panel_metrics.EVALUATION_PANEL
    ids_seen = [EvaluationPanel().get_evaluation_id(dataset, k) for k in (fields.eval_key, fields.colony_eval_key)]
    assert panel.state == {f"{i}_cmc": panel_metrics.EVERY_CLASS for i in ids_seen}  # the ids the panel keys by
    assert all(state["skipZeroCount"] is False for state in panel.state.values())

    removed = writeback.delete_run(dataset, fields)
    assert f"workspace {fields.workspace}" in removed and not dataset.has_workspace(fields.workspace)


def test_the_app_command_refuses_a_workspace_the_dataset_lacks(world: World) -> None:
    from evaluate.cli import app

    with pytest.raises(UserError, match=f"dataset '{world.dataset}' has no saved workspace 'review_nope'"):
        app(world.dataset, workspace="review_nope")


def test_a_missing_plugin_is_an_error_not_a_silent_panel(astreopora_missed, tmp_path, monkeypatch) -> None:
    dataset, ids, fields, _ = astreopora_missed
    monkeypatch.setattr(panel_metrics, "PLUGINS_DIR", tmp_path / "no_plugins")
    with pytest.raises(UserError, match="did not compute the custom metrics"):
        writeback.run_fiftyone_evaluations(dataset, ids, fields, "four", FOUR, FOUR_PALETTE)


def test_the_plugin_lists_every_operator_of_the_module() -> None:
    import yaml

    listed = yaml.safe_load((panel_metrics.PLUGINS_DIR / "reefseg_metrics" / "fiftyone.yml").read_text())
    assert listed["name"] == panel_metrics.PLUGIN_NAME
    assert [f"{listed['name']}/{name}" for name in listed["operators"]] == panel_metrics.SEGMENTATION_METRICS
