"""push_to_cvat through the real cvat-sdk against the local fake CVAT server."""

from __future__ import annotations

import io
import warnings
from dataclasses import replace

import numpy as np
import pytest
from cvat_server import FakeCvat, confidence_spec, polygon
from evaluate_world import World
from PIL import Image

from common.cli import UserError
from evaluate.colonies import find_colonies
from evaluate.cvat_push import PushOptions, push_predictions
from models.backbones import RandomBackboneWarning
from prepare.taxonomy import taxonomy_dirs


def _png(path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def _server(
    world: World, labels=("Acropora", "Porites"), version: str = "2.80.0"
) -> tuple[FakeCvat, int, dict[str, int]]:
    cvat = FakeCvat(version=version)
    project = cvat.add_project(
        "Reef", labels=[(name, [confidence_spec()] if name != "Porites" else []) for name in (*labels, "Pocillopora")]
    )
    ids = {name: cvat.label_id(project, name) for name in (*labels, "Pocillopora")}
    frames = [(path.name, _png(path)) for path in sorted((world.root / "media").glob("Reef_*.png"))]
    manual = polygon(0, ids["Pocillopora"], [1, 1, 20, 1, 10, 15])
    earlier_auto = {**polygon(1, ids[labels[0]], [2, 2, 30, 2, 15, 20]), "source": "auto"}
    task = cvat.add_task(project, "Moorea to correct", frames=frames, shapes=[manual, earlier_auto])
    return cvat, task, ids


def _push(world: World, cvat: FakeCvat, task: int, **options) -> tuple[dict[str, int], str]:
    settings = replace(world.settings, cvat_url=cvat.url, cvat_username=cvat.username, cvat_password=cvat.password)
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomBackboneWarning)
        dirs = tuple(taxonomy_dirs(settings.taxonomy_dirs))
        counts = push_predictions(
            settings,
            PushOptions(run_dir=world.run_dir, task_id=task, precision="fp32", taxonomy_dirs=dirs, **options),
            out,
        )
    return counts, out.getvalue()


def _expected_colonies(world: World) -> list[list]:
    """The run's colonies per frame (frames are sorted by name, like the world's images)."""
    return [find_colonies(mask, np.ones(mask.shape, dtype=np.float32)) for mask in world.model_masks]


@pytest.mark.parametrize("version", ["2.80.0", "2.29.0"])
def test_push_adds_automatic_polygons_and_keeps_people_s_shapes(world: World, version: str) -> None:
    cvat, task, ids = _server(world, version=version)
    with cvat.serve():
        counts, printed = _push(world, cvat, task)
        shapes = cvat.annotations[task]["shapes"]
    expected = _expected_colonies(world)
    auto = [s for s in shapes if s["source"] == "auto"]
    assert len(auto) == 1 + sum(len(c) for c in expected)  # the earlier automatic shape stays without --replace
    assert sum(counts.values()) == len(auto) - 1
    assert [s for s in shapes if s["source"] == "manual"] == [
        {**polygon(0, ids["Pocillopora"], [1, 1, 20, 1, 10, 15]), "id": 1}
    ]
    new = auto[1:]
    for frame, colonies in enumerate(expected):
        sent = [s for s in new if s["frame"] == frame]
        assert sorted(s["label_id"] for s in sent) == sorted(
            ids[["", "Acropora", "Porites"][c.class_index]] for c in colonies
        )
        height, width = world.model_masks[frame].shape
        assert all(
            0 <= x <= width and 0 <= y <= height for s in sent for x, y in zip(s["points"][::2], s["points"][1::2])
        )
    acropora = [s for s in new if s["label_id"] == ids["Acropora"]]
    spec = cvat.attribute_id(ids["Acropora"], "confidence")
    assert acropora and all(len(s["attributes"]) == 1 and s["attributes"][0]["spec_id"] == spec for s in acropora)
    assert all(s["attributes"][0]["value"].isdigit() and 0 <= int(s["attributes"][0]["value"]) <= 100 for s in acropora)
    assert all(
        s["attributes"] == [] for s in new if s["label_id"] == ids["Porites"]
    )  # Porites has no confidence attribute
    assert "Porites" in printed and "already had 1 automatic shapes" in printed


def test_replace_removes_only_earlier_automatic_shapes(world: World) -> None:
    cvat, task, ids = _server(world)
    with cvat.serve():
        _push(world, cvat, task)
        counts, printed = _push(world, cvat, task, replace=True)
        shapes = cvat.annotations[task]["shapes"]
    assert sum(1 for s in shapes if s["source"] == "auto") == sum(counts.values())
    assert [s["label_id"] for s in shapes if s["source"] == "manual"] == [ids["Pocillopora"]]
    assert "removed" in printed


def test_dry_run_sends_nothing(world: World) -> None:
    cvat, task, _ = _server(world)
    with cvat.serve():
        counts, printed = _push(world, cvat, task, dry_run=True, replace=True)
    assert sum(counts.values()) > 0 and "would send" in printed and "example shape" in printed
    assert not [r for r in cvat.requests if r.method in ("PUT", "PATCH", "DELETE")]
    assert len(cvat.annotations[task]["shapes"]) == 2


def test_task_without_a_class_label_is_refused_by_name(world: World) -> None:
    cvat, task, _ = _server(world, labels=("Acropora",))
    with (
        cvat.serve(),
        pytest.raises(UserError, match=r"no label for the run's classes Porites \(its labels: Acropora, Pocillopora\)"),
    ):
        _push(world, cvat, task)


def test_frame_of_another_size_than_cvat_records_is_refused(world: World) -> None:
    cvat, task, _ = _server(world)
    name, data, width, height = cvat.frames[task][0]
    cvat.frames[task][0] = (name, data, width + 8, height)
    with (
        cvat.serve(),
        pytest.raises(
            UserError, match=f"CVAT frame {name} decodes to {width}x{height} but the task records {width + 8}x{height}"
        ),
    ):
        _push(world, cvat, task, dry_run=True)
