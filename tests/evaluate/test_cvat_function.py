"""The auto-annotation function through cvat-sdk's own driver (and cvat-cli) against the local fake CVAT server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from cvat_server import FakeCvat, confidence_spec, polygon
from evaluate_world import World
from PIL import Image

from common.cli import UserError
from evaluate.colonies import find_colonies
from evaluate.cvat_function import ReefFunction, create, load_function, parse_label_names
from models.backbones import RandomBackboneWarning
from prepare.polygons import polygon_to_cvat_points

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def function(world: World) -> ReefFunction:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        return load_function(str(world.run_dir), precision="fp32", settings=world.settings)


def _frames(world: World) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted((world.root / "media").glob("Reef_*.png"))]


def _server(
    world: World, labels=("Acropora", "Porites"), version: str = "2.80.0"
) -> tuple[FakeCvat, int, dict[str, int]]:
    cvat = FakeCvat(version=version)
    names = (*labels, "Pocillopora")
    project = cvat.add_project("Reef", labels=[(name, [confidence_spec()]) for name in names])
    ids = {name: cvat.label_id(project, name) for name in names}
    manual = polygon(0, ids["Pocillopora"], [1, 1, 20, 1, 10, 15])
    return cvat, cvat.add_task(project, "Moorea to annotate", frames=_frames(world), shapes=[manual]), ids


def _annotate(
    cvat: FakeCvat, task: int, function, tmp_path: Path, logger: logging.Logger | None = None, **options
) -> list[dict]:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk import Client, Config

    with Client(
        cvat.url, config=Config(cache_dir=tmp_path / "cache"), check_server_version=False, logger=logger
    ) as client:
        client.login((cvat.username, cvat.password))
        cvataa.annotate_task(client, task, function, **options)
    return cvat.annotations[task]["shapes"]


def _images(world: World) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted((world.root / "media").glob("Reef_*.png"))]


@pytest.mark.parametrize("version", ["2.80.0", "2.29.0"])
def test_annotate_task_adds_each_colony_as_a_mask_with_its_exact_pixels(
    world: World, function: ReefFunction, tmp_path: Path, version: str
) -> None:
    from cvat_sdk.masks import decode_mask

    cvat, task, ids = _server(world, version=version)
    with cvat.serve():
        shapes = _annotate(cvat, task, function, tmp_path)
    assert [s for s in shapes if s["source"] == "manual"] == [
        {**polygon(0, ids["Pocillopora"], [1, 1, 20, 1, 10, 15]), "id": 1}
    ]
    auto = [s for s in shapes if s["source"] == "auto"]
    assert auto and {s["type"] for s in auto} == {"mask"}
    for frame, mask in enumerate(world.model_masks):
        height, width = mask.shape
        expected = find_colonies(mask, np.ones(mask.shape, dtype=np.float32))
        sent = [s for s in auto if s["frame"] == frame]
        assert len(sent) == len(expected)
        for class_index, name in ((1, "Acropora"), (2, "Porites")):
            painted = np.zeros(mask.shape, dtype=bool)
            for shape in (s for s in sent if s["label_id"] == ids[name]):
                pixels = decode_mask(shape["points"], image_width=width, image_height=height)
                assert not (painted & pixels).any()  # colonies never overlap
                painted |= pixels
            kept = np.zeros(
                mask.shape, dtype=bool
            )  # the class's pixels in regions of at least 16 (smaller ones are noise)
            for colony in (c for c in expected if c.class_index == class_index):
                left, top, right, bottom = colony.box
                kept[top:bottom, left:right] |= colony.pixels
            assert (painted == kept).all() and ((mask == class_index) | ~kept).all()
    assert all(0 < s["score"] <= 1 for s in auto)


def test_polygons_when_the_caller_converts_masks(world: World, function: ReefFunction, tmp_path: Path) -> None:
    cvat, task, ids = _server(world)
    with cvat.serve():
        shapes = _annotate(cvat, task, function, tmp_path, conv_mask_to_poly=True)
    auto = [s for s in shapes if s["source"] == "auto"]
    expected = [
        (frame, ids[["", "Acropora", "Porites"][c.class_index]], polygon_to_cvat_points(c.polygon))
        for frame, mask in enumerate(world.model_masks)
        for c in find_colonies(mask, np.ones(mask.shape, dtype=np.float32))
    ]
    assert {s["type"] for s in auto} == {"polygon"}
    assert sorted((s["frame"], s["label_id"], s["points"]) for s in auto) == sorted(expected)


def test_conf_threshold_keeps_colonies_whose_mean_confidence_reaches_it(
    world: World, function: ReefFunction, tmp_path: Path
) -> None:
    confidences = sorted(c.confidence for image in _images(world) for c in function.detector.colonies(image))
    threshold = confidences[len(confidences) // 2]
    assert confidences[0] < threshold  # the threshold drops some colonies and keeps others
    cvat, task, _ = _server(world)
    with cvat.serve():
        shapes = _annotate(cvat, task, function, tmp_path, conf_threshold=threshold, conv_mask_to_poly=True)
    auto = [s for s in shapes if s["source"] == "auto"]
    assert sorted(s["score"] for s in auto) == pytest.approx([c for c in confidences if c >= threshold])


def test_a_class_the_task_lacks_is_named_and_can_be_skipped(
    world: World, function: ReefFunction, tmp_path: Path, caplog
) -> None:
    from cvat_sdk.auto_annotation import BadFunctionError

    cvat, task, ids = _server(world, labels=("Acropora",))
    with cvat.serve():
        with pytest.raises(BadFunctionError, match="label 'Porites' is not in dataset"):
            _annotate(cvat, task, function, tmp_path)
        logger = logging.getLogger("test_cvat_function")
        with caplog.at_level(logging.INFO, logger="test_cvat_function"):
            shapes = _annotate(cvat, task, function, tmp_path, logger=logger, allow_unmatched_labels=True)
    assert "label 'Porites' is not in dataset; any annotations using it will be ignored" in caplog.text
    auto = [s for s in shapes if s["source"] == "auto"]
    acropora = sum(
        int(c.class_index == 1) for m in world.model_masks for c in find_colonies(m, np.ones(m.shape, dtype=np.float32))
    )
    assert len(auto) == acropora and {s["label_id"] for s in auto} == {ids["Acropora"]}


@pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")
def test_labels_rename_classes_to_the_task_s_labels_and_confidence_attribute(world: World, tmp_path: Path) -> None:
    renamed = load_function(str(world.run_dir), precision="fp32", settings=world.settings, labels="Acropora=acro, Porites=Porites massive",
                            shape="polygon", confidence_attribute=True)  # fmt: skip
    assert [(lb.name, lb.id, lb.type) for lb in renamed.spec.labels] == [
        ("acro", 1, "polygon"),
        ("Porites massive", 2, "polygon"),
    ]
    cvat, task, ids = _server(world, labels=("acro", "Porites massive"))
    with cvat.serve():
        shapes = _annotate(cvat, task, renamed, tmp_path)
    auto = [s for s in shapes if s["source"] == "auto"]
    assert {s["label_id"] for s in auto} == {ids["acro"], ids["Porites massive"]} and {s["type"] for s in auto} == {
        "polygon"
    }
    spec_ids = {cvat.attribute_id(ids[name], "confidence") for name in ("acro", "Porites massive")}
    assert all(len(s["attributes"]) == 1 and s["attributes"][0]["spec_id"] in spec_ids for s in auto)
    assert all(round(100 * s["score"]) == int(s["attributes"][0]["value"]) for s in auto)


@pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")
def test_parameter_mistakes_are_one_sentence(world: World, capsys) -> None:
    classes = ["background", "Acropora", "Porites"]
    with pytest.raises(UserError, match="not a class of the run"):
        parse_label_names("Pocillopora=poci", classes)
    with pytest.raises(UserError, match="class=CVAT label pairs"):
        parse_label_names("Acropora", classes)
    with pytest.raises(UserError, match="shape must be mask or polygon"):
        load_function(str(world.run_dir), shape="rectangle", settings=world.settings)
    for params, message in (({}, "add -p run=str:runs/<name>"), ({"run": str(world.run_dir), "colour": "red"}, "unknown function parameter(s) colour"),
                            ({"run": str(world.root / "nope")}, "nope")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            create(**params)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cvat_cli_auto_annotate_runs_the_module(world: World, tmp_path: Path) -> None:
    """The command README gives, in a subprocess like a user's shell (its own caches and config under tmp)."""
    cvat, task, _ = _server(world)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PYTHONPATH": str(ROOT), "DEVICE": "cpu", "PASS": cvat.password}  # fmt: skip
    command = [sys.executable, "-m", "cvat_cli", "--server-host", "", "--auth", cvat.username, "task", "auto-annotate", str(task),
               "--function-module", "evaluate.cvat_function", "-p", f"run=str:{world.run_dir}", "-p", "precision=str:fp32", "--conv-mask-to-poly"]  # fmt: skip
    with cvat.serve() as url:
        command[command.index("--server-host") + 1] = url
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        shapes = cvat.annotations[task]["shapes"]
    assert done.returncode == 0, done.stderr[-2000:]
    expected = sum(len(find_colonies(m, np.ones(m.shape, dtype=np.float32))) for m in world.model_masks)
    assert sum(s["source"] == "auto" for s in shapes) == expected
    assert cvat.password not in done.stdout + done.stderr


def test_the_detector_computes_where_its_options_say_not_where_the_settings_do(world: World):
    """ColonyDetector reads no settings: device and weights come complete in DetectorOptions."""
    from evaluate.cvat_function import ColonyDetector, DetectorOptions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        detector = ColonyDetector(DetectorOptions(world.run_dir, precision="fp32", device="cpu"))
    assert detector.device.type == "cpu" and detector.runtime.precision == "fp32"
    with pytest.raises(UserError, match="not an image OpenCV can read"):
        from evaluate.cvat_function import decode_frame

        decode_frame(b"not an image", "7")


def test_a_loaded_detector_leaves_what_it_loaded_out_of_the_collectors_full_passes(world: World):
    """A function server answers for hours; a full collection over torch and the model would hold each request."""
    import gc

    from evaluate.cvat_function import ColonyDetector, DetectorOptions

    gc.unfreeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        ColonyDetector(DetectorOptions(world.run_dir, precision="fp32", device="cpu"))
    assert gc.get_freeze_count() > 100_000
