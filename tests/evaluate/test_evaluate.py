"""evaluate end to end on the tiny world: known scores, FiftyOne write-back, reruns, deletes, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from evaluate_world import CLASSES, PALETTE, World, evaluate_world, make_run, world_environment

from common.cli import UserError
from evaluate.fields import RunFields, gt_colonies_field, gt_segmentation_field
from evaluate.pipeline import evaluation_dir
from models.metrics import compute_metrics, confusion_matrix
from prepare.layout import load_prepared
from prepare.mask_png import read_mask

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluated(world: World):
    return evaluate_world(world)


def _gt_masks(world: World) -> dict[str, np.ndarray]:
    prepared = load_prepared(world.settings.data_root / "prepared" / f"{world.dataset}_tinytax")
    return {e.sample_id: read_mask(prepared.mask_path(e)) for e in prepared.entries}


def test_scores_equal_an_independent_count(world: World, evaluated) -> None:
    report, printed = evaluated
    gt = _gt_masks(world)
    expected = sum(confusion_matrix(gt[i], m, 3) for i, m in zip(world.sample_ids, world.model_masks))
    assert np.array_equal(report.matrix, expected)
    image, dropped_class = world.dropped
    first = confusion_matrix(gt[world.sample_ids[image]], world.model_masks[image], 3)
    # in the image that lost a colony only that colony differs: background in the ground truth, the class in the prediction
    assert first[0, dropped_class] == first.sum() - first.trace() > 0
    assert (
        expected.trace() > 0.95 * expected.sum()
    )  # elsewhere the ground truth traces the predictions (regions under 16 px aside)
    metrics = json.loads((evaluation_dir(world.run_dir, world.dataset, "val") / "metrics.json").read_text())
    assert metrics["summary"]["miou"] == pytest.approx(compute_metrics(expected, CLASSES).miou, abs=1e-6)
    assert metrics["settings"]["fiftyone_confusion_matrix_agrees"] is True
    assert "Acropora" in printed and "python evaluate/app.py" in printed
    assert metrics["dataset"] == world.dataset and metrics["settings"]["prepared"].endswith(f"{world.dataset}_tinytax")
    report_md = (evaluation_dir(world.run_dir, world.dataset, "val") / "report.md").read_text()
    assert report_md.startswith(f"# Evaluation of `tiny-linear` on dataset `{world.dataset}`, split `val`")


def test_the_run_is_also_scored_at_every_coarser_level_and_per_site_and_year(world: World, evaluated) -> None:
    from models.metrics import merge_classes

    gt = _gt_masks(world)
    matrices = [confusion_matrix(gt[i], m, 3) for i, m in zip(world.sample_ids, world.model_masks)]
    folder = evaluation_dir(world.run_dir, world.dataset, "val")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["taxonomy"] == "tinytax" and [level["taxonomy"] for level in metrics["levels"]] == ["tinycoral"]
    coral = compute_metrics(merge_classes(sum(matrices), [0, 1, 1]), ["background", "coral"])
    level = metrics["levels"][0]
    assert level["classes"] == ["background", "coral"] and level["runs_trained_at_this_level"] == []
    assert level["summary"]["miou"] == pytest.approx(coral.miou, abs=1e-6)
    assert level["per_class"][1]["gt_pixels"] == sum(int(m[1:].sum()) for m in matrices)
    # every sample of the world is site Reef, year 2024 (several groups: tests/evaluate/test_reports.py)
    assert [(row["group"], row["images"]) for row in metrics["by_site"]] == [("Reef", 3)]
    assert metrics["by_site"][0]["miou"] == pytest.approx(metrics["summary"]["miou"], abs=1e-6)
    assert [(row["group"], row["images"]) for row in metrics["by_year"]] == [(2024, 3)]
    report_md = (folder / "report.md").read_text()
    assert "## Per site" in report_md and "## Per year" in report_md and "### `tinycoral` (1 class)" in report_md
    assert "tiny-linear (mapped up)" in report_md
    rows = list(csv.DictReader((folder / "per_site_and_year.csv").open()))
    assert [(r["by"], r["group"], r["images"]) for r in rows] == [("site", "Reef", "3"), ("year", "2024", "3")]


def test_predicted_masks_are_palette_pngs_of_the_predictions(world: World, evaluated) -> None:
    from PIL import Image

    for i, mask in enumerate(world.model_masks):
        path = evaluation_dir(world.run_dir, world.dataset, "val") / "masks" / f"Reef_2024_{i:02d}.png"
        with Image.open(path) as image:
            assert image.mode == "P" and image.getpalette()[3:6] == PALETTE[1]
        assert np.array_equal(read_mask(path), mask)


def test_colonies_matched_class_by_class(world: World, evaluated) -> None:
    import fiftyone as fo
    from fiftyone import ViewField as F

    report, _ = evaluated
    dropped_name = CLASSES[world.dropped[1]]
    assert report.colonies[dropped_name].fp == 1  # the colony deleted from the ground truth is "invented"
    assert all(c.fn == 0 for c in report.colonies.values())
    assert sum(c.tp for c in report.colonies.values()) > 3
    dataset = fo.load_dataset(world.dataset)
    fields = RunFields.for_run(world.run_dir.name)
    invented = dataset.filter_labels(
        fields.colonies, (F(fields.colony_eval_key) == "fp") & (F("label") == dropped_name)
    )
    assert invented.count(f"{fields.colonies}.polylines") == 1
    confidences = dataset.values(f"{fields.colonies}.polylines.confidence", unwind=True)
    assert confidences and all(0.3 < c <= 1 for c in confidences)
    assert set(dataset.distinct(f"{gt_colonies_field('tinytax')}.polylines.label")) <= {"Acropora", "Porites"}


def test_fiftyone_fields_views_and_colours(world: World, evaluated) -> None:
    import fiftyone as fo

    dataset = fo.load_dataset(world.dataset)
    fields = RunFields.for_run(world.run_dir.name)
    sample = dataset[world.sample_ids[2]]
    assert Path(sample[fields.prediction].mask_path).is_file() and sample[fields.prediction].mask is None
    assert Path(sample[gt_segmentation_field("tinytax")].mask_path).is_file()
    assert sample[fields.miou] == pytest.approx(
        1.0
    )  # image 2 has no region under 16 px, so its trace is exact: perfect
    assert dataset[world.sample_ids[0]][fields.miou] < 1.0
    assert dataset[world.sample_ids[0]][fields.iou]["Acropora"] == pytest.approx(1.0)
    assert dataset.has_evaluation(fields.eval_key) and dataset.has_evaluation(fields.colony_eval_key)
    worst = dataset.load_saved_view(fields.worst_first)
    assert worst.first().id == world.sample_ids[0] and len(worst) == 3
    assert dataset.mask_targets[fields.prediction] == {
        "#000000": "background",
        "#3cb44b": "Acropora",
        "#800000": "Porites",
    }
    gt_colonies = gt_colonies_field("tinytax")
    active = dataset.app_config.active_fields.paths  # other tests' runs in the shared world add theirs
    assert {fields.colonies, gt_colonies} <= set(active) and not {
        fields.prediction,
        gt_segmentation_field("tinytax"),
    } & set(active)
    scheme = {f["path"]: f for f in dataset.app_config.color_scheme.fields}
    assert dataset.app_config.color_scheme.color_by == "value"
    for path in (fields.colonies, gt_colonies):
        assert scheme[path]["colorByAttribute"] == "label" and scheme[path]["valueColors"] == [
            {"value": name, "color": "#{:02x}{:02x}{:02x}".format(*rgb)} for name, rgb in zip(CLASSES, PALETTE)
        ]
    # predictions drawn as outlines, the ground truth filled: told apart where both are shown
    assert set(dataset.values(f"{fields.colonies}.polylines.filled", unwind=True)) == {False}
    assert set(dataset.values(f"{gt_colonies}.polylines.filled", unwind=True)) == {True}
    iou_group = next(g for g in dataset.app_config.sidebar_groups if f"{fields.iou}.Acropora" in g.paths)
    assert iou_group.paths == [f"{fields.iou}.{name}" for name in CLASSES]  # taxonomy order, display names
    assert dataset.values("note") == ["kept 0", "kept 1", "kept 2"]


def test_review_views_one_click_each(world: World, evaluated) -> None:
    import fiftyone as fo

    _, printed = evaluated
    dataset = fo.load_dataset(world.dataset)
    fields = RunFields.for_run(world.run_dir.name)
    dropped = CLASSES[world.dropped[1]]
    gt_colonies = gt_colonies_field("tinytax")
    views = {name: dataset.load_saved_view(name) for name in dataset.list_saved_views() if fields.owns_view(name)}
    assert set(views) == {fields.worst_first, fields.missed, fields.invented, fields.invented_class(dropped)}
    assert len(views[fields.missed]) == 0  # every colony of the ground truth was found
    for name in (fields.invented, fields.invented_class(dropped)):  # the deleted colony, and nothing else
        view = views[name]
        assert view.values("id") == [world.sample_ids[0]]
        assert view.values(f"{fields.colonies}.polylines.label", unwind=True) == [dropped]
        assert gt_colonies not in view.get_field_schema()  # only the fields the view is about
    worst_schema = views[fields.worst_first].get_field_schema()
    assert {fields.prediction, gt_segmentation_field("tinytax"), fields.colonies, gt_colonies} <= set(worst_schema)
    assert "note" not in worst_schema and "gt_polylines" not in worst_schema
    assert f"{fields.invented_class(dropped)} (1)" in printed
    assert f"python evaluate/app.py {world.dataset} --view {fields.worst_first}" in printed


def test_rerun_replaces_and_delete_removes_only_the_run(world: World, evaluated) -> None:
    import fiftyone as fo

    from evaluate.cli import evaluate

    before = set(fo.load_dataset(world.dataset).get_field_schema())
    report, _ = evaluate_world(world, split="val", tta=True, tta_scales=(0.75, 1.0))
    assert (report.settings["tta"], report.settings["tta_scales"]) == (True, [0.75, 1.0])
    dataset = fo.load_dataset(world.dataset)
    assert set(dataset.get_field_schema()) == before
    fields = RunFields.for_run(world.run_dir.name)
    assert dataset.list_evaluations() == sorted([fields.eval_key, fields.colony_eval_key])
    gt_polylines = dataset.values("gt_polylines.polylines.label", unwind=True)

    evaluate(run=str(world.run_dir), dataset=world.dataset, delete=True)
    dataset.reload()
    schema = set(dataset.get_field_schema())
    assert not [f for f in schema if fields.key in f or f.startswith(("gt_mask_", "gt_colonies_"))]
    assert dataset.list_evaluations() == [] and not [v for v in dataset.list_saved_views() if fields.owns_view(v)]
    assert fields.prediction not in dataset.mask_targets
    assert dataset.values("note") == ["kept 0", "kept 1", "kept 2"]
    assert dataset.values("gt_polylines.polylines.label", unwind=True) == gt_polylines
    assert (evaluation_dir(world.run_dir, world.dataset, "val") / "masks").is_dir()  # files on disk stay
    evaluate_world(world)  # leave the world evaluated for the other tests


def test_eval_key_of_another_run_is_refused(world: World, evaluated, tmp_path: Path) -> None:
    twin = tmp_path / world.run_dir.name
    shutil.copytree(world.run_dir, twin, ignore=shutil.ignore_patterns("eval"))
    with pytest.raises(UserError, match=f"belongs to run {world.run_dir}"):
        evaluate_world(world, run_dir=twin)


def test_a_second_evaluation_of_a_run_waits_for_none_and_says_why(world: World, evaluated) -> None:
    """Two evaluations of one run would overwrite each other's fields: the second stops with one sentence."""
    import fcntl

    from evaluate.pipeline import LOCK_FILE

    with open(world.run_dir / "eval" / LOCK_FILE, "a") as other:  # another process's lock, as the OS sees it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another evaluation of tiny-linear is running"):
            evaluate_world(world)
    report, printed = evaluate_world(world)  # released: the rerun goes through
    assert "reused 3 earlier predictions" in printed


def test_run_of_another_taxonomy_is_refused(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other-taxonomy"
    make_run(other, classes=["background", "coral"], palette=[[0, 0, 0], [255, 127, 80]], taxonomy="tinytax")
    with pytest.raises(UserError, match="holds the 3 classes of taxonomy 'tinytax'"):
        evaluate_world(world, run_dir=other)
    agnostic = tmp_path / "agnostic-run"
    make_run(agnostic, classes=["background", "coral"], palette=[[0, 0, 0], [255, 127, 80]], taxonomy="agnostic")
    with pytest.raises(
        UserError,
        match=f"predicts taxonomy 'agnostic' but dataset '{world.dataset}' was prepared only as {world.dataset}_tinytax",
    ):
        evaluate_world(world, run_dir=agnostic)


def test_split_without_ground_truth_predicts_only(world: World, evaluated, tmp_path: Path) -> None:
    import fiftyone as fo
    from PIL import Image

    path = tmp_path / "new_quadrat.png"
    Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8)).save(path)
    dataset = fo.load_dataset(world.dataset)
    sample_id = dataset.add_sample(fo.Sample(filepath=str(path), tags=["test"]))
    try:
        report, printed = evaluate_world(world, split="test")
        assert not report.scored and "nothing was scored" in printed
        metrics = json.loads((evaluation_dir(world.run_dir, world.dataset, "test") / "metrics.json").read_text())
        assert metrics["images"] == 1 and metrics["summary"] is None
        assert dataset[sample_id][RunFields.for_run(world.run_dir.name).prediction] is not None
    finally:
        dataset.delete_samples(sample_id)
        evaluate_world(world)


def test_image_and_mask_of_different_sizes_are_refused(world: World, tmp_path: Path) -> None:
    from evaluate.pipeline import _ground_truth

    prepared = load_prepared(world.settings.data_root / "prepared" / f"{world.dataset}_tinytax")
    with pytest.raises(UserError, match="is 71x56 but its mask .* is 70x56"):
        _ground_truth(prepared, prepared.entries[0], (56, 71), "Reef_2024_00.png")


def test_cli_without_checkpoint_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate" / "evaluate.py"), "--run", str(tmp_path / "empty-run"), "--dataset", "whatever"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "holds no checkpoint_best checkpoint" in result.stderr
    assert list((tmp_path / "empty-run").iterdir()) == []  # nothing written into a folder that holds no run


def test_rerun_resumes_from_earlier_predictions(world: World, evaluated) -> None:
    cache = evaluation_dir(world.run_dir, world.dataset, "val") / "predictions.jsonl"
    report, printed = evaluate_world(world)
    assert "reused 3 earlier predictions" in printed
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # interrupted while appending the second image
    again, printed = evaluate_world(world)
    assert "reused 1 earlier predictions" in printed
    assert np.array_equal(again.matrix, report.matrix)
    assert [c.tp for c in again.colonies.values()] == [c.tp for c in report.colonies.values()]
    assert len(cache.read_text().splitlines()) == 3


def test_a_checkpoint_without_palette_takes_the_taxonomy_colours(world: World) -> None:
    from evaluate.pipeline import run_palette
    from models.checkpoint import read_checkpoint
    from prepare.taxonomy import load_taxonomy, taxonomy_dirs

    _, spec = read_checkpoint(world.run_dir)
    spec.palette = []
    assert run_palette(spec, load_taxonomy("tinytax", taxonomy_dirs(world.settings.taxonomy_dirs))) == PALETTE


def test_colony_evaluation_equals_fiftyones_evaluate_detections(world: World, evaluated) -> None:
    """The bulk-saving colony evaluation writes what `evaluate_detections` itself writes, label by label."""
    import fiftyone as fo

    from evaluate.fields import COLONY_IOU

    dataset = fo.load_dataset(world.dataset)
    fields = RunFields.for_run(world.run_dir.name)
    pred, gt, key = fields.colonies, gt_colonies_field("tinytax"), fields.colony_eval_key
    reference = dataset.evaluate_detections(
        pred, gt_field=gt, eval_key="reference", iou=COLONY_IOU, classwise=True, progress=False
    )
    try:
        ours = dataset.load_evaluation_results(key)
        assert list(ours.ytrue) == list(reference.ytrue) and list(ours.ypred) == list(reference.ypred)
        assert len(ours.ytrue) > 5
        for field in (pred, gt):
            for suffix in ("", "_id", "_iou"):
                assert dataset.values(f"{field}.polylines.{key}{suffix}") == dataset.values(
                    f"{field}.polylines.reference{suffix}"
                )
        for kind in ("tp", "fp", "fn"):
            assert dataset.values(f"{key}_{kind}") == dataset.values(f"reference_{kind}")
        assert dataset.get_evaluation_info(key).config.iou == COLONY_IOU
    finally:
        dataset.delete_evaluation("reference")


def test_a_second_dataset_never_replaces_the_first_datasets_evaluation(world: World, evaluated, tmp_path: Path) -> None:
    """Same run, same split, same image file names, another dataset: each keeps its own report, metrics and masks."""
    import fiftyone as fo
    from PIL import Image

    from prepare.cli import prepare

    first = evaluation_dir(world.run_dir, world.dataset, "val")
    files_before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    other = fo.load_dataset(world.dataset).clone(f"{world.dataset}_other")
    try:
        for sample in other:  # the same names, other pixels: mirrored images
            flipped = tmp_path / "media2" / Path(sample.filepath).name
            flipped.parent.mkdir(exist_ok=True)
            Image.fromarray(np.asarray(Image.open(sample.filepath))[:, ::-1].copy()).save(flipped)
            sample.filepath = str(flipped)
            sample.save()
        with pytest.MonkeyPatch.context() as patch:
            world_environment(world.root, patch)
            prepare(other.name, taxonomy="tinytax", workers=1)
        evaluate_world(world, dataset=other.name)
        second = evaluation_dir(world.run_dir, other.name, "val")
        assert second != first and json.loads((second / "metrics.json").read_text())["dataset"] == other.name
        assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == files_before
        assert json.loads((first / "metrics.json").read_text())["dataset"] == world.dataset
        fields = RunFields.for_run(world.run_dir.name)
        for sample_id, mask in zip(
            world.sample_ids, world.model_masks
        ):  # the first dataset's fields still show its own masks
            path = Path(fo.load_dataset(world.dataset)[sample_id][fields.prediction].mask_path)
            assert path.parent == first / "masks" and np.array_equal(read_mask(path), mask)
        mirrored = [Path(s[fields.prediction].mask_path) for s in other]
        assert all(p.parent == second / "masks" for p in mirrored)
        assert any(not np.array_equal(read_mask(p), m) for p, m in zip(mirrored, world.model_masks))
    finally:
        other.delete()


@pytest.fixture
def clean_clone(world: World):
    """A copy of the world's dataset without any evaluation, prepared like the world's."""
    import fiftyone as fo

    from evaluate.cli import evaluate
    from prepare.cli import prepare

    clone = fo.load_dataset(world.dataset).clone(f"{world.dataset}_user")
    with pytest.MonkeyPatch.context() as patch:
        world_environment(world.root, patch)
        evaluate(run=str(world.run_dir), dataset=clone.name, delete=True)
        prepare(clone.name, taxonomy="tinytax", workers=1)
    clone.reload()
    yield clone
    clone.delete()


@pytest.mark.parametrize(
    "made_by_user",
    ["gt_mask_tinytax as text", "gt_colonies_tinytax as detections", "pred field as a number", "saved view"],
)
def test_a_field_the_user_made_under_evaluates_name_is_refused_before_anything_is_written(
    world: World, clean_clone, made_by_user
) -> None:
    import fiftyone as fo

    fields = RunFields.for_run(world.run_dir.name)
    if made_by_user == "gt_mask_tinytax as text":
        clean_clone.set_values("gt_mask_tinytax", [f"my note {i}" for i in range(len(clean_clone))])
    elif made_by_user == "gt_colonies_tinytax as detections":
        clean_clone.set_values(
            "gt_colonies_tinytax",
            [fo.Detections(detections=[fo.Detection(label="x", bounding_box=[0, 0, 1, 1])])] * len(clean_clone),
        )
    elif made_by_user == "pred field as a number":
        clean_clone.set_values(fields.prediction, [1.5] * len(clean_clone))
    else:
        clean_clone.save_view(fields.worst_first, clean_clone.limit(1))
    schema, values = (
        clean_clone.get_field_schema(),
        {n: clean_clone.values(n) for n in clean_clone.get_field_schema() if n != "id"},
    )
    info, views = dict(clean_clone.info), clean_clone.list_saved_views()
    with pytest.raises(
        UserError, match="already has .*(gt_mask_tinytax|gt_colonies_tinytax|pred_tiny_linear|saved view worst_first)"
    ):
        evaluate_world(world, dataset=clean_clone.name)
    clean_clone.reload()
    assert (
        clean_clone.get_field_schema().keys() == schema.keys()
        and clean_clone.info == info
        and clean_clone.list_saved_views() == views
    )
    assert {n: clean_clone.values(n) for n in schema if n != "id"} == values and clean_clone.list_evaluations() == []
    assert not evaluation_dir(world.run_dir, clean_clone.name, "val").exists()


def test_a_damaged_ground_truth_mask_is_refused_before_anything_is_written(world: World, clean_clone) -> None:
    prepared = load_prepared(world.settings.data_root / "prepared" / f"{clean_clone.name}_tinytax")
    damaged = prepared.mask_path(prepared.entries[1])
    damaged.write_bytes(b"")
    schema, info = clean_clone.get_field_schema().keys(), dict(clean_clone.info)
    with pytest.raises(
        UserError, match=f"mask {damaged} is empty; rerun prepare/prepare_data.py {clean_clone.name} --taxonomy tinytax"
    ):
        evaluate_world(world, dataset=clean_clone.name)
    clean_clone.reload()
    assert clean_clone.get_field_schema().keys() == schema and clean_clone.info == info
    assert not evaluation_dir(world.run_dir, clean_clone.name, "val").exists()


def test_what_was_loaded_is_frozen_while_images_and_evaluations_are_written(world: World, monkeypatch) -> None:
    import gc

    from evaluate import pipeline

    frozen: dict[str, list[int]] = {"write_sample": [], "run_fiftyone_evaluations": []}
    for name in frozen:
        original = getattr(pipeline.writeback, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            frozen[_name].append(gc.get_freeze_count())  # the loop's writes, and FiftyOne's evaluations after it
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipeline.writeback, name, counting)
    gc.unfreeze()
    evaluate_world(world)
    assert all(counts and min(counts) > 100_000 for counts in frozen.values()), frozen  # torch, FiftyOne, the model
    assert gc.get_freeze_count() == 0  # given back after the command: a finished run's model can be collected


def test_a_wrong_dataset_split_or_taxonomy_is_refused_before_any_backbone_is_built(
    world: World, monkeypatch, tmp_path: Path
) -> None:
    from evaluate import pipeline

    def never(*args, **kwargs):
        raise AssertionError("the backbone was built before the arguments were checked")

    monkeypatch.setattr(pipeline, "build_model", never)
    with pytest.raises(UserError, match="FiftyOne dataset 'no_such_dataset' not found"):
        evaluate_world(world, dataset="no_such_dataset")
    with pytest.raises(UserError, match="has no sample in split 'test'"):
        evaluate_world(world, split="test")
    other = tmp_path / "other-taxonomy"
    make_run(other, classes=["background", "coral"], palette=[[0, 0, 0], [255, 127, 80]], taxonomy="tinytax")
    with pytest.raises(UserError, match="holds the 3 classes of taxonomy 'tinytax'"):
        evaluate_world(world, run_dir=other)
