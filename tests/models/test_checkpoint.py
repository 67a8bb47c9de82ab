"""Checkpoint contract: safetensors + JSON only, exact round trip, weights-hash check, warm start."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch

from common.cli import UserError
from models.backbones import build_backbone
from models.checkpoint import (
    CheckpointSpec,
    init_head_from,
    load_checkpoint,
    load_run_checkpoint,
    read_checkpoint,
    save_run_checkpoint,
)
from models.heads import HEADS, build_head
from models.segmenter import Segmenter

pytestmark = [
    pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning"),
    pytest.mark.usefixtures("one_thread"),
]


TINY = {
    "linear": {},
    "segformer": {"channels": 16},
    "upernet": {"channels": 16, "scales": [2, 1, 0.5]},
    "mask2former": {
        "hidden_dim": 16,
        "num_queries": 4,
        "num_layers": 2,
        "num_heads": 2,
        "ffn_dim": 32,
        "loss_points": 64,
    },
    "pmt": {"hidden_dim": 16, "num_queries": 4, "num_layers": 2, "num_heads": 2, "loss_points": 64},
}
COARSE = ["sand", "hard_coral", "algae"]
FINE = ["sand", "acropora", "porites", "pocillopora", "algae"]


def trained_model(head_name: str, classes: list[str], weights: str | None = None) -> tuple[Segmenter, CheckpointSpec]:
    """A tiny backbone + head after a few optimizer steps (so no weight is at its initial value)."""
    torch.manual_seed(0)
    backbone = build_backbone("tiny_dinov2", weights=weights, layers=4)
    head = build_head(
        head_name, backbone.embed_dim, 4, len(classes), **TINY[head_name], class_weights=[1.0] * len(classes)
    )
    model = Segmenter(backbone, head).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    images, target = torch.rand(2, 3, 28, 28), torch.randint(0, len(classes), (2, 28, 28))
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(images, target)["loss"].backward()
        optimizer.step()
    palette = [[i * 40, 255 - i * 40, 7] for i in range(len(classes))]
    spec = CheckpointSpec.of(
        backbone, head, classes, palette, "main_families", window=28, window_stride=14, info={"step": 3}
    )
    return model.eval(), spec


@pytest.mark.parametrize("head_name", list(HEADS))
def test_round_trip_gives_identical_logits(tmp_path: Path, head_name: str) -> None:
    model, spec = trained_model(head_name, COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "best")
    loaded, loaded_spec = load_checkpoint(tmp_path, "best")
    assert loaded_spec == spec
    image = torch.randint(0, 256, (1, 3, 30, 41), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    assert not loaded.training and loaded.frozen


def test_loss_options_stay_out_of_the_spec_and_older_specs_with_them_still_load(tmp_path: Path) -> None:
    model, spec = trained_model("mask2former", COARSE)
    assert "loss_points" in model.head.config and "loss_points" not in spec.head_config
    save_run_checkpoint(tmp_path, model.head, spec, "best")
    path = tmp_path / "checkpoint_best.json"
    document = json.loads(path.read_text())
    document["head_config"].update(num_points=64, loss_points=64)  # mask2former's former name, and a spec from before
    path.write_text(json.dumps(document))
    loaded, _ = load_checkpoint(tmp_path, "best")
    image = torch.randint(0, 256, (1, 3, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))


def test_files_are_safetensors_and_json_and_loading_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, spec = trained_model("linear", COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.json", "checkpoint_last.safetensors"]
    raw = (tmp_path / "checkpoint_last.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(model.head.state_dict())
    document = json.loads((tmp_path / "checkpoint_last.json").read_text())
    assert document["backbone"] == "tiny_dinov2" and document["weights_hash"] == "random"
    assert document["layers"] == [0, 1, 2, 3] and document["classes"] == COARSE and document["num_classes"] == 3
    assert (
        document["mean"] == [0.485, 0.456, 0.406]
        and document["window"] == 28
        and document["window_stride"] == 14
        and document["version"] == 3
        and document["train_blocks"] == 0
    )
    assert document["head"] == "linear" and document["head_config"] == {}  # class weights are loss-only

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    loaded, _ = load_run_checkpoint(tmp_path / "checkpoint_last.json")
    assert torch.equal(loaded.head.classifier.weight, model.head.classifier.weight)


def test_missing_or_damaged_checkpoints_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no checkpoint_best checkpoint.*train a model there first"):
        load_checkpoint(tmp_path)
    model, spec = trained_model("linear", COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "last")
    with pytest.raises(UserError, match="it has checkpoint_last.json"):
        load_checkpoint(tmp_path, "best")
    with pytest.raises(UserError, match="choose one of best, last"):
        load_checkpoint(tmp_path, "final")
    other, _ = trained_model("linear", ["a", "b"])
    save_run_checkpoint(
        tmp_path / "other", other.head, dataclasses.replace(spec, num_classes=2, classes=["a", "b"], palette=[]), "last"
    )
    (tmp_path / "other" / "checkpoint_last.json").replace(tmp_path / "checkpoint_last.json")
    with pytest.raises(UserError, match="does not match checkpoint_last.json"):
        read_checkpoint(tmp_path, "last")


def test_backbone_weights_must_be_the_ones_the_head_was_trained_on(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.pth"
    state = dict(build_backbone("tiny_dinov2").vit.state_dict())
    state["mask_token"] = torch.zeros(1, 32)
    torch.save(state, weights)
    model, spec = trained_model("linear", COARSE, weights=str(weights))
    assert spec.weights_hash not in ("", "random")
    save_run_checkpoint(tmp_path / "run", model.head, spec)
    loaded, _ = load_checkpoint(tmp_path / "run", weights=str(weights))
    image = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    with pytest.raises(UserError, match="trained on backbone weights .* no weights were given"):
        load_checkpoint(tmp_path / "run")
    with pytest.warns(UserWarning, match="pass the training weights"):
        load_checkpoint(tmp_path / "run", allow_other_weights=True)


@pytest.mark.parametrize("head_name", list(HEADS))
def test_warm_start_coarse_to_fine_keeps_all_but_the_classifier(tmp_path: Path, head_name: str) -> None:
    coarse, spec = trained_model(head_name, COARSE)
    save_run_checkpoint(tmp_path, coarse.head, spec)
    torch.manual_seed(1)
    fine = build_head(head_name, 32, 4, len(FINE), **TINY[head_name])
    fresh = {k: v.clone() for k, v in fine.state_dict().items()}
    report = init_head_from(fine, tmp_path, classes=FINE)
    assert report.skipped and all(k.startswith(fine.classifier_prefixes) for k in report.skipped)
    assert sorted(report.kept + report.skipped) == sorted(fresh)
    source = coarse.head.state_dict()
    assert all(torch.equal(fine.state_dict()[k], source[k]) for k in report.kept)
    assert all(torch.equal(fine.state_dict()[k], fresh[k]) for k in report.skipped)


def test_warm_start_keeps_the_classifier_only_for_the_same_classes(tmp_path: Path) -> None:
    coarse, spec = trained_model("segformer", COARSE)
    save_run_checkpoint(tmp_path, coarse.head, spec)
    same = build_head("segformer", 32, 4, 3, **TINY["segformer"])
    assert init_head_from(same, tmp_path, classes=COARSE).skipped == []
    renamed = build_head("segformer", 32, 4, 3, **TINY["segformer"])
    assert init_head_from(renamed, tmp_path, classes=["a", "b", "c"]).skipped == [
        "classifier.weight",
        "classifier.bias",
    ]
    with pytest.raises(UserError, match="another backbone"):
        init_head_from(build_head("segformer", 48, 4, 3, **TINY["segformer"]), tmp_path)
    with pytest.raises(UserError, match="trained a 'segformer' head"):
        init_head_from(build_head("linear", 32, 4, 3), tmp_path)


def test_version_1_specs_with_crop_and_stride_still_load(tmp_path: Path) -> None:
    """Version 1 named the sliding window `crop`/`stride`; version 2 writes `window`/`window_stride`."""
    model, spec = trained_model("linear", COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "best")
    spec_file = tmp_path / "checkpoint_best.json"
    document = json.loads(spec_file.read_text())
    version_1 = {("crop" if k == "window" else "stride" if k == "window_stride" else k): v for k, v in document.items()}
    spec_file.write_text(json.dumps({**version_1, "version": 1}))
    loaded, loaded_spec = load_checkpoint(tmp_path, "best")
    assert (loaded_spec.window, loaded_spec.window_stride) == (28, 14) and loaded_spec == spec
    spec_file.write_text(json.dumps({**document, "version": 4}))
    with pytest.raises(UserError, match="is not a reefseg-checkpoint version 1, 2 or 3 spec"):
        read_checkpoint(tmp_path, "best")


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("json list", "holds a JSON list, not a checkpoint spec"),
        ("json binary", "is not valid JSON"),
        ("json truncated", "is not valid JSON"),
        ("tensors garbage with its hash", "cannot be read"),
    ],
)
def test_a_damaged_checkpoint_file_is_one_sentence_naming_it(tmp_path: Path, damage: str, problem: str) -> None:
    import hashlib

    model, spec = trained_model("linear", COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "best")
    spec_file, tensor_file = tmp_path / "checkpoint_best.json", tmp_path / "checkpoint_best.safetensors"
    if damage == "json list":
        spec_file.write_text("[1, 2]")
    elif damage == "json binary":
        spec_file.write_bytes(b"\xff\xfe\x00\x01")
    elif damage == "json truncated":
        spec_file.write_text(spec_file.read_text()[:40])
    else:  # damaged tensors whose hash was written into the spec too: the hash check alone cannot tell
        tensor_file.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
        raw = json.loads(spec_file.read_text()) | {
            "tensors_sha256": hashlib.sha256(tensor_file.read_bytes()).hexdigest()
        }
        spec_file.write_text(json.dumps(raw))
    with pytest.raises(UserError) as error:
        read_checkpoint(tmp_path)
    assert (
        problem in str(error.value) and "the checkpoint is damaged" in str(error.value) and "\n" not in str(error.value)
    )


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    model, spec = trained_model("linear", COARSE)
    save_run_checkpoint(tmp_path, model.head, spec, "last")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="checkpoint_last.safetensors: the disk is full"):
        save_run_checkpoint(tmp_path, model.head, spec, "last")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
