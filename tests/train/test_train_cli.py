"""`train/train.py` end to end on tiny data: every head learns, runs resume exactly, bad input gets one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides, write_prepared, write_sample
from safetensors.torch import load_file

from train import cli, loop

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")
SMALL_MASK2FORMER = "{hidden_dim: 32, num_queries: 8, num_layers: 2, num_heads: 4, ffn_dim: 64, num_points: 784}"


def run_cli(monkeypatch, capsys, config: str | None, **overrides) -> tuple[int, str]:
    """Run `train.py` in this process with `--key value` arguments; (exit status, stderr)."""
    argv = ["train.py"] + (["--config", config] if config else [])
    for key, value in overrides.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    monkeypatch.setattr(sys, "argv", argv)
    torch.set_num_threads(1)
    try:
        cli.main()
    except SystemExit as exit_:
        return int(exit_.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("head", ["linear", "segformer", "upernet", "mask2former"])
def test_each_head_learns_the_toy_task_from_the_cli(tmp_path, prepared, monkeypatch, capsys, head):
    extra = {
        "mask2former": {"head_config": SMALL_MASK2FORMER, "lr": 1e-3, "steps": 40, "eval_every": 20},
        "segformer": {"class_weights": True},  # the loss weighted by 1/sqrt(class frequency) from the manifest
    }.get(head, {})
    status, err = run_cli(monkeypatch, capsys, f"train/configs/{head}.yaml", **tiny_overrides(tmp_path, prepared, **extra))
    assert status == 0, err
    run = tmp_path / "runs" / f"{head}_toy_toy"
    records = metrics(run)
    assert [r["step"] for r in records] == [15, 30] if head != "mask2former" else [20, 40]
    assert records[-1]["miou"] > 0.6  # chance (uniform guesses over 3 balanced classes) is about 0.2
    for name in ("config.yaml", "classes.txt", "palette.txt", "train.log", "train_state.pt", "checkpoint_best.json",
                 "checkpoint_best.safetensors", "checkpoint_last.json", "checkpoint_last.safetensors"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.*"))
    assert (run / "classes.txt").read_text().splitlines() == ["background", "Acropora", "Porites"]
    spec = json.loads((run / "checkpoint_best.json").read_text())
    assert spec["head"] == head and spec["classes"] == ["background", "Acropora", "Porites"] and spec["window"] == 56
    assert spec["layers"] == ([3] if head == "linear" else [0, 1, 2, 3])
    assert ("class weights (1/sqrt of training pixel frequency): background" in (run / "train.log").read_text()) == (head == "segformer")


def _crash_at(monkeypatch, call: int, error: BaseException) -> None:
    """Make the `call`-th training step raise `error` (a crash, an out-of-memory, ...)."""
    real, calls = loop.TrainStep.forward, {"n": 0}

    def forward(self, inputs, target):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(self, inputs, target)

    monkeypatch.setattr(loop.TrainStep, "forward", forward)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=12, eval_every=4, head_config="{dropout: 0.5}")
    assert run_cli(monkeypatch, capsys, None, name="whole", **settings)[0] == 0
    with monkeypatch.context() as patch:
        _crash_at(patch, 11, RuntimeError("simulated crash"))
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_cli(monkeypatch, capsys, None, name="broken", **settings)
    assert torch.load(tmp_path / "runs" / "broken" / "train_state.pt", weights_only=True)["step"] == 8
    status, err = run_cli(monkeypatch, capsys, None, name="broken", resume=True, **settings)
    assert status == 0, err
    whole, resumed = (load_file(tmp_path / "runs" / n / "checkpoint_last.safetensors") for n in ("whole", "broken"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    a, b = (torch.load(tmp_path / "runs" / n / "train_state.pt", weights_only=True) for n in ("whole", "broken"))
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["step"] == b["step"] == 12
    assert [r["step"] for r in metrics(tmp_path / "runs" / "broken")] == [4, 8, 12]
    assert [r["miou"] for r in metrics(tmp_path / "runs" / "broken")] == [r["miou"] for r in metrics(tmp_path / "runs" / "whole")]


def test_warm_start_from_another_taxonomy_keeps_all_but_the_classifier(tmp_path, prepared, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, None, name="coarse", **tiny_overrides(tmp_path, prepared, steps=4, eval_every=4))[0] == 0
    fine = write_prepared(tmp_path / "fine", train=2, val=1)
    (fine / "classes.txt").write_text("background\nAcropora\nPorites\nPocillopora\n")
    (fine / "palette.txt").write_text("0 0 0\n255 0 0\n0 0 255\n0 255 0\n")
    status, err = run_cli(monkeypatch, capsys, None, name="fine", init_from=str(tmp_path / "runs" / "coarse"),
                          **tiny_overrides(tmp_path, fine, steps=1, eval_every=1, lr=1e-12, warmup_steps=1))
    assert status == 0, err
    coarse, warm = (load_file(tmp_path / "runs" / n / "checkpoint_last.safetensors") for n in ("coarse", "fine"))
    assert warm["classifier.weight"].shape[0] == 4 and coarse["classifier.weight"].shape[0] == 3
    torch.testing.assert_close(warm["norm.weight"], coarse["norm.weight"])  # kept (lr ~0: unchanged by its one step)
    assert "fresh classifier.weight, classifier.bias" in (tmp_path / "runs" / "fine" / "train.log").read_text()


def _one_line(status: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_prepared_folder_missing_a_file(tmp_path, prepared, monkeypatch, capsys):
    next(iter((prepared / "train" / "data").iterdir())).unlink()
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)), "missing; rerun prepare")
    (prepared / "classes.txt").unlink()
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)), "not a prepared dataset (missing classes.txt)")


def test_mask_of_the_wrong_size(tmp_path, prepared, monkeypatch, capsys):
    image = next(iter(sorted((prepared / "val" / "data").iterdir())))
    write_sample(prepared, "val", image.stem, np.zeros((112, 112, 3), np.uint8), np.zeros((100, 112), np.uint8))
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)), f"{image.stem}.png is 112x100 but its image is 112x112")


@pytest.mark.parametrize("damage, problem", [
    ("empty", "is empty"), ("value 200", "holds value 200, but masks of 3 classes hold 0-2 and 255"),
    ("wrong size", "is 112x56 but its image is 112x112"), ("garbage", "is not a readable mask PNG"),
])
def test_a_damaged_mask_is_refused_before_training_with_the_fix(tmp_path, prepared, monkeypatch, capsys, damage, problem):
    from prepare.mask_png import encode_mask_png, palette_bytes

    mask = sorted((prepared / "train" / "labels").iterdir())[1]
    palette = palette_bytes([(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    mask.write_bytes({
        "empty": b"", "garbage": b"\x89PNG\r\n\x1a\nnot really",
        "value 200": encode_mask_png(np.full((112, 112), 200, np.uint8), palette),
        "wrong size": encode_mask_png(np.zeros((56, 112), np.uint8), palette),
    }[damage])
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)), f"mask {mask} {problem}", "rerun prepare/prepare_data.py")
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made


def test_resume_with_another_class_count(tmp_path, prepared, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared, steps=2, eval_every=2))[0] == 0
    (prepared / "classes.txt").write_text("background\nAcropora\nPorites\nPocillopora\n")
    (prepared / "palette.txt").write_text("0 0 0\n255 0 0\n0 0 255\n0 255 0\n")
    _one_line(*run_cli(monkeypatch, capsys, None, name="r", resume=True, **tiny_overrides(tmp_path, prepared, steps=4)),
              "was trained on 3 classes but", "has 4")


def test_existing_run_unknown_backbone_and_crop(tmp_path, prepared, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared, steps=1, eval_every=1))[0] == 0
    _one_line(*run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared)), "already holds a run; pass --resume")
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, backbone="dinov9_vitz14")),
              "unknown backbone 'dinov9_vitz14'", "dinov2_vits14")
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, crop=50)), "crop 50 is not a multiple of", "patch size 14")
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, window=60)), "window 60 is not a multiple of", "use 56")
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, stepz=3)), "unknown flag --stepz; did you mean --steps?")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared, monkeypatch, capsys):
    real = loop.TrainStep.forward
    calls = {"n": 0}

    def forward(self, inputs, target):
        calls["n"] += 1
        losses = real(self, inputs, target)
        return {**losses, "loss": losses["loss"] * float("nan")} if calls["n"] == 5 else losses

    monkeypatch.setattr(loop.TrainStep, "forward", forward)
    run = tmp_path / "runs" / "nan"
    _one_line(*run_cli(monkeypatch, capsys, None, name="nan", **tiny_overrides(tmp_path, prepared, eval_every=2)),
              "loss became nan at step 5", f"{run / 'checkpoint_last'} (step 4)", "lower --lr")
    assert json.loads((run / "checkpoint_last.json").read_text())["info"]["step"] == 4
    weights = load_file(run / "checkpoint_last.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_gpu_out_of_memory_says_what_to_lower(tmp_path, prepared, monkeypatch, capsys):
    _crash_at(monkeypatch, 2, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    _one_line(*run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, batch_size=8)),
              "ran out of memory while training", "lower --batch-size (now 8) or --crop (now 56)")


def test_no_cache_trains_on_live_views_to_the_same_result(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=10, eval_every=10, precision="fp32")
    assert run_cli(monkeypatch, capsys, None, name="cached", **settings)[0] == 0
    assert run_cli(monkeypatch, capsys, None, name="live", **{"no-cache": True}, **settings)[0] == 0
    cached, live = (metrics(tmp_path / "runs" / n)[-1]["miou"] for n in ("cached", "live"))
    assert abs(cached - live) < 0.01  # the same views, fp16-stored features against live fp32 ones
    assert "feature cache" not in (tmp_path / "runs" / "live" / "train.log").read_text()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, prepared, monkeypatch, capsys):
    """`torchrun --nproc_per_node=2` (gloo on CPU) splits each batch; DDP averages the gradients back."""
    settings = tiny_overrides(tmp_path, prepared, steps=10, eval_every=10, precision="fp32", head_config="{dropout: 0.0}")
    assert run_cli(monkeypatch, capsys, None, name="one", **settings)[0] == 0
    args = [arg for key, value in settings.items() for arg in (f"--{key}", json.dumps(value) if isinstance(value, list) else str(value))]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train/train.py", "--name", "two", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_file(tmp_path / "runs" / n / "checkpoint_last.safetensors") for n in ("one", "two"))
    for key in one:
        if "running_" in key:  # SyncBatchNorm needs GPUs: on CPUs each process keeps statistics of its half batch
            torch.testing.assert_close(two[key], one[key], atol=0.1, rtol=0.1, msg=key)
        elif one[key].is_floating_point():
            torch.testing.assert_close(two[key], one[key], atol=5e-3, rtol=2e-2, msg=key)
    m_one, m_two = metrics(tmp_path / "runs" / "one")[-1], metrics(tmp_path / "runs" / "two")[-1]
    assert abs(m_one["miou"] - m_two["miou"]) < 0.02
    assert "2 process(es)" in (tmp_path / "runs" / "two" / "train.log").read_text()


def test_without_data_dir_it_trains_on_the_demo_folder_under_data_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    write_prepared(tmp_path / "data" / "prepared" / "reef_demo_finegrained", train=2, val=1)
    overrides = {k: v for k, v in tiny_overrides(tmp_path, tmp_path, steps=2, eval_every=2).items() if k not in ("data_dir", "cache_dir")}
    status, err = run_cli(monkeypatch, capsys, None, **overrides)
    assert status == 0, err
    assert (tmp_path / "runs" / "linear_reef_demo_finegrained" / "checkpoint_best.json").is_file()
    assert list((tmp_path / "data" / "cache").glob("tiny_dinov2-*/*/layer_3.npy"))  # the cache defaults to DATA_ROOT/cache
