"""Partial fine-tuning: the frozen part and the trained blocks compose to the whole backbone, bit for bit, for every
family; LoRA trains only its adapters and merges into plain block weights; checkpoints carry the trained blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.cli import UserError
from models.backbones import CHECKPOINT_PREFIX, build_backbone
from models.checkpoint import CheckpointSpec, load_checkpoint, read_checkpoint, save_run_checkpoint
from models.heads import build_head
from models.segmenter import Segmenter

pytestmark = [
    pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning"),
    pytest.mark.usefixtures("one_thread"),
]
FAMILIES = ["tiny_dinov2", "tiny_dinov2_reg", "tiny_dinov3"]  # learned positions, + registers, RoPE + registers


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("train_blocks", [1, 2, 4, "all"])
def test_frozen_part_then_trained_blocks_equal_the_whole_backbone(name: str, train_blocks: int | str) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 60, 44)  # not a multiple of either patch: padded
    with torch.no_grad():
        whole = build_backbone(name, layers=4)(images)
    backbone = build_backbone(name, layers=4).set_trainable(train_blocks)
    frozen = backbone.frozen_features(images)
    grid = tuple(whole[0].shape[-2:])
    split = backbone.features_from_frozen(frozen, grid)
    assert len(split) == 4 and all(torch.equal(a, b) for a, b in zip(split, whole))
    assert torch.equal(torch.cat(backbone(images)), torch.cat(whole))
    first = 0 if train_blocks == "all" else 4 - int(train_blocks)
    prefix = 1 + backbone.spec.num_registers
    assert len(frozen) == first + 1 and frozen[-1].shape == (2, prefix + grid[0] * grid[1], 32)  # tokens entering it
    assert backbone.frozen_names() == [f"layer_{i}" for i in range(first)] + [f"tokens_{first}"]
    trained = {
        n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks.") else "")
        for n, p in backbone.vit.named_parameters()
        if p.requires_grad
    }
    if train_blocks == "all":
        assert "patch_embed" in trained and "norm" in trained and "cls_token" in trained
    else:  # the final norm is shared with the cached frozen maps: it stays frozen
        assert trained == {f"blocks.{i}" for i in range(first, 4)}


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_trains_only_adapters_and_merges_into_plain_block_weights(name: str) -> None:
    torch.manual_seed(0)
    images = torch.randn(1, 3, 48, 48)
    plain = build_backbone(name, layers=4)
    with torch.no_grad():
        before = plain(images)
    backbone = build_backbone(name, layers=4).set_trainable(2, lora_rank=4)
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[2] for n in trainable} == {"2", "3"}  # blocks 2 and 3 only
    assert {n.split(".")[4] for n in trainable} == {"qkv", "proj"}
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(backbone(images), before))  # B starts at zero
        for n, p in backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        adapted = backbone(images)
    # the adapters act (DINOv3's fused qkv bias too; bypassed, the output would be bit for bit the same)
    assert not torch.equal(adapted[-1], before[-1])
    assert torch.equal(adapted[0], before[0])  # frozen blocks untouched
    weights = backbone.trained_weights()
    assert not any("lora_" in k or "base_layer" in k for k in weights)
    assert set(weights) == {k for k in plain.vit.state_dict() if k.startswith(("blocks.2.", "blocks.3."))}
    plain.load_trained_weights(weights, 2)
    with torch.no_grad():
        torch.testing.assert_close(plain(images)[-1], adapted[-1], atol=1e-5, rtol=1e-5)


def test_trained_blocks_the_head_never_reads_and_lora_without_blocks_are_refused() -> None:
    with pytest.raises(UserError, match=r"trains blocks 2-3 of tiny_dinov2 but the head reads blocks \[0, 1\]"):
        build_backbone("tiny_dinov2", layers=[0, 1]).set_trainable(2)
    with pytest.raises(UserError, match="train_blocks must be 0 to 4"):
        build_backbone("tiny_dinov2").set_trainable(5)
    with pytest.raises(UserError, match="set train_blocks too"):
        build_backbone("tiny_dinov2").set_trainable(0, lora_rank=2)


def _fine_tuned(train_blocks: int | str, name: str = "tiny_dinov2") -> tuple[Segmenter, CheckpointSpec]:
    """A segmenter whose head and trained blocks took a few optimizer steps."""
    torch.manual_seed(0)
    backbone = build_backbone(name, layers=4).set_trainable(train_blocks)
    head = build_head("segformer", backbone.embed_dim, 4, 3, channels=16)
    model = Segmenter(backbone, head).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    images, target = torch.rand(2, 3, 28, 28), torch.randint(0, 3, (2, 28, 28))
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(images, target)["loss"].backward()
        optimizer.step()
    spec = CheckpointSpec.of(backbone, head, ["a", "b", "c"], [], "toy", window=28, window_stride=28)
    return model.eval(), spec


@pytest.mark.parametrize("train_blocks", [1, "all"])
def test_checkpoint_holds_the_trained_blocks_and_predicts_as_trained(tmp_path: Path, train_blocks: int | str) -> None:
    model, spec = _fine_tuned(train_blocks)
    save_run_checkpoint(tmp_path, model.head, spec, "best", model.backbone)
    tensors, read = read_checkpoint(tmp_path, "best")
    stored = {k[len(CHECKPOINT_PREFIX) :] for k in tensors if k.startswith(CHECKPOINT_PREFIX)}
    whole = set(model.backbone.vit.state_dict())
    assert stored == (whole if train_blocks == "all" else {k for k in whole if k.startswith("blocks.3.")})
    assert read.train_blocks == train_blocks
    assert json.loads((tmp_path / "checkpoint_best.json").read_text())["version"] == 3
    loaded, _ = load_checkpoint(tmp_path, "best")
    assert loaded.frozen and not loaded.training
    image = torch.randint(0, 256, (1, 3, 30, 41), dtype=torch.uint8)
    frozen_backbone = Segmenter(build_backbone("tiny_dinov2", layers=4), model.head).eval()
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
        assert not torch.allclose(frozen_backbone(image), model(image), atol=1e-4)  # the blocks did train


def test_a_spec_without_train_blocks_loads_as_a_frozen_backbone(tmp_path: Path) -> None:
    model, spec = _fine_tuned(0)
    save_run_checkpoint(tmp_path, model.head, spec, "best")
    spec_file = tmp_path / "checkpoint_best.json"
    document = json.loads(spec_file.read_text())
    del document["train_blocks"]
    spec_file.write_text(json.dumps({**document, "version": 2}))
    loaded, loaded_spec = load_checkpoint(tmp_path, "best")
    assert loaded_spec.train_blocks == 0
    image = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    spec_file.write_text(json.dumps({**document, "version": 3, "train_blocks": "some"}))
    with pytest.raises(UserError, match="train_blocks 'some', not a block count"):
        read_checkpoint(tmp_path, "best")
