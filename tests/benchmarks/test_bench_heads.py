"""bench_heads: each row trains the head's config resolved as the command line resolves it, with the row's options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train.loop
from benchmarks import bench_heads
from train.config import TrainConfig, check_resolved


def test_a_row_trains_a_resolved_config_and_counts_the_trained_backbone_blocks_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig) -> dict[str, object]:
        check_resolved(config)  # what train() itself checks first
        seen.append(config)
        run = tmp_path / "runs" / config.name
        run.mkdir(parents=True)
        head = {"classifier.weight": torch.zeros(3, 2), "norm.running_mean": torch.zeros(5)}
        torch.save({"head": head, "backbone": {"blocks.11.mlp.fc1.weight": torch.zeros(4)}}, run / "train_state.pt")
        return {"run": str(run)}

    monkeypatch.setattr(train.loop, "train", fake_train)
    spec = {
        "head": "segformer",
        "options": {"loss_points": 0},
        "steps": 3,
        "name": "row",
        "data": str(tmp_path / "prepared"),
        "runs": str(tmp_path / "runs"),
        "cache": str(tmp_path / "cache"),
        "device": "cpu",
        "train_blocks": 2,
    }
    result = bench_heads.train_run(spec)
    (config,) = seen
    assert config.head_config == {"channels": 256, "dropout": 0.1, "loss_points": 0}
    assert (config.train_blocks, config.steps, config.eval_every, config.patience) == (2, 3, 3, 0)
    assert result["params"] == 6 + 4  # head and trained blocks; running statistics are not parameters


def test_the_former_segformer_computation_is_restored_after_its_row() -> None:
    from models.heads.segformer import SegFormerHead

    folded = SegFormerHead.forward
    with bench_heads.former_computation(True):
        assert SegFormerHead.forward is bench_heads.former_segformer_forward
    assert SegFormerHead.forward is folded
