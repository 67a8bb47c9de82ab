"""Field names: one run's names never collide with another's, and are valid FiftyOne names."""

from __future__ import annotations

import pytest

from evaluate.fields import RunFields, class_key, field_key, gt_colonies_field, gt_segmentation_field


def test_names_from_run_folders_and_classes() -> None:
    fields = RunFields.for_run("Linear-Reef 2024")
    assert fields.key == "linear_reef_2024"
    assert (fields.prediction, fields.colonies, fields.eval_key, fields.colony_eval_key) == (
        "pred_linear_reef_2024", "pred_linear_reef_2024_colonies", "eval_linear_reef_2024", "eval_linear_reef_2024_colonies",
    )  # fmt: skip
    assert fields.worst_first == "worst_first_linear_reef_2024"
    assert RunFields.for_run("2024-run").key == "run_2024_run"
    assert class_key("Pavona/Leptoseris") == "Pavona_Leptoseris" and class_key("1 other") == "class_1_other"
    assert (fields.missed, fields.invented_class("Pavona/Leptoseris")) == (
        "missed_linear_reef_2024", "invented_linear_reef_2024__Pavona_Leptoseris",
    )  # fmt: skip
    shorter = RunFields.for_run("linear")  # a run key that starts another's: its views stay apart
    assert fields.owns_view(fields.missed_class("Acropora")) and fields.owns_view(fields.worst_first)
    assert not shorter.owns_view(fields.missed) and not shorter.owns_view(fields.missed_class("Acropora"))
    assert (
        gt_segmentation_field("main_families") == "gt_mask_main_families"
        and gt_colonies_field("extended") == "gt_colonies_extended"
    )
    with pytest.raises(ValueError, match="no letter or digit"):
        field_key("--")
