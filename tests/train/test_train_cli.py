"""`train/train.py` end to end on tiny data: every head learns, runs resume exactly, bad input gets one clear line."""

from __future__ import annotations

import json
import os
import shlex
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
SMALL_MASK2FORMER = "{hidden_dim: 32, num_queries: 8, num_layers: 2, num_heads: 4, ffn_dim: 64, loss_points: 784}"
SMALL_PMT = "{hidden_dim: 32, num_queries: 8, num_layers: 2, num_heads: 4, loss_points: 784}"


def run_cli(monkeypatch, capsys, config: str | None, **overrides) -> tuple[int, str]:
    """Run `train.py` in this process with `--key value` arguments; (exit status, stderr)."""
    argv = ["train.py"] + (["--config", config] if config else [])
    for key, value in overrides.items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        argv += (
            [f"--{key}={text}"] if text.startswith("-") else [f"--{key}", text]
        )  # `--lr -inf` would read -inf as a flag
    monkeypatch.setattr(sys, "argv", argv)
    torch.set_num_threads(1)
    try:
        cli.main()
    except SystemExit as exit_:
        return int(exit_.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("head", ["linear", "segformer", "upernet", "mask2former", "pmt"])
def test_each_head_learns_the_toy_task_from_the_cli(tmp_path, prepared, monkeypatch, capsys, head):
    extra = {
        "mask2former": {"head_config": SMALL_MASK2FORMER, "lr": 1e-3, "steps": 40, "eval_every": 20},
        # pmt supervises every block (deep supervision): its 2-block toy head reaches 0.45 mIoU at 40 steps, > 0.6 at 60
        "pmt": {"head_config": SMALL_PMT, "lr": 1e-3, "steps": 60, "eval_every": 30},
        "segformer": {"class_weights": True},  # the loss weighted by 1/sqrt(class frequency) from the manifest
    }.get(head, {})
    status, err = run_cli(
        monkeypatch, capsys, f"train/configs/{head}.yaml", **tiny_overrides(tmp_path, prepared, **extra)
    )
    assert status == 0, err
    run = tmp_path / "runs" / f"{head}_toy_toy"
    records = metrics(run)
    assert [r["step"] for r in records] == {"mask2former": [20, 40], "pmt": [30, 60]}.get(head, [15, 30])
    assert records[-1]["miou"] > 0.6  # chance (uniform guesses over 3 balanced classes) is about 0.2
    for name in (
        "config.yaml",
        "classes.txt",
        "palette.txt",
        "train.log",
        "train_state.pt",
        "checkpoint_best.json",
        "checkpoint_best.safetensors",
        "checkpoint_last.json",
        "checkpoint_last.safetensors",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.*"))
    assert (run / "classes.txt").read_text().splitlines() == ["background", "Acropora", "Porites"]
    spec = json.loads((run / "checkpoint_best.json").read_text())
    assert spec["head"] == head and spec["classes"] == ["background", "Acropora", "Porites"] and spec["window"] == 56
    assert spec["layers"] == ([3] if head == "linear" else [0, 1, 2, 3])
    assert ("class weights (1/sqrt of training pixel frequency): background" in (run / "train.log").read_text()) == (
        head == "segformer"
    )


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
    assert [r["miou"] for r in metrics(tmp_path / "runs" / "broken")] == [
        r["miou"] for r in metrics(tmp_path / "runs" / "whole")
    ]


def test_warm_start_from_another_taxonomy_keeps_all_but_the_classifier(tmp_path, prepared, monkeypatch, capsys):
    assert (
        run_cli(monkeypatch, capsys, None, name="coarse", **tiny_overrides(tmp_path, prepared, steps=4, eval_every=4))[
            0
        ]
        == 0
    )
    fine = write_prepared(tmp_path / "fine", train=2, val=1)
    (fine / "classes.txt").write_text("background\nAcropora\nPorites\nPocillopora\n")
    (fine / "palette.txt").write_text("0 0 0\n255 0 0\n0 0 255\n0 255 0\n")
    status, err = run_cli(
        monkeypatch,
        capsys,
        None,
        name="fine",
        init_from=str(tmp_path / "runs" / "coarse"),
        **tiny_overrides(tmp_path, fine, steps=1, eval_every=1, lr=1e-12, warmup_steps=1),
    )
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
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)),
        "not a prepared dataset (missing classes.txt)",
    )


def test_mask_of_the_wrong_size(tmp_path, prepared, monkeypatch, capsys):
    image = next(iter(sorted((prepared / "val" / "data").iterdir())))
    write_sample(prepared, "val", image.stem, np.zeros((112, 112, 3), np.uint8), np.zeros((100, 112), np.uint8))
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)),
        f"{image.stem}.png is 112x100 but its image is 112x112",
    )


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("empty", "is empty"),
        ("value 200", "holds value 200, but masks of 3 classes hold 0-2 and 255"),
        ("wrong size", "is 112x56 but its image is 112x112"),
        ("garbage", "is not a readable mask PNG"),
    ],
)
def test_a_damaged_mask_is_refused_before_training_with_the_fix(
    tmp_path, prepared, monkeypatch, capsys, damage, problem
):
    from prepare.mask_png import encode_mask_png, palette_bytes

    mask = sorted((prepared / "train" / "labels").iterdir())[1]
    palette = palette_bytes([(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    mask.write_bytes(
        {
            "empty": b"",
            "garbage": b"\x89PNG\r\n\x1a\nnot really",
            "value 200": encode_mask_png(np.full((112, 112), 200, np.uint8), palette),
            "wrong size": encode_mask_png(np.zeros((56, 112), np.uint8), palette),
        }[damage]
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared)),
        f"mask {mask} {problem}",
        "rerun prepare/prepare_data.py",
    )
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made


def test_resume_with_another_class_count(tmp_path, prepared, monkeypatch, capsys):
    assert (
        run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared, steps=2, eval_every=2))[0]
        == 0
    )
    (prepared / "classes.txt").write_text("background\nAcropora\nPorites\nPocillopora\n")
    (prepared / "palette.txt").write_text("0 0 0\n255 0 0\n0 0 255\n0 255 0\n")
    _one_line(
        *run_cli(monkeypatch, capsys, None, name="r", resume=True, **tiny_overrides(tmp_path, prepared, steps=4)),
        "was trained on 3 classes but",
        "has 4",
    )


def test_existing_run_unknown_backbone_and_crop(tmp_path, prepared, monkeypatch, capsys):
    assert (
        run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared, steps=1, eval_every=1))[0]
        == 0
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, name="r", **tiny_overrides(tmp_path, prepared)),
        "already holds a run; pass --resume",
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, backbone="dinov9_vitz14")),
        "unknown backbone 'dinov9_vitz14'",
        "dinov2_vits14",
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, crop=50)),
        "crop 50 is not a multiple of",
        "patch size 14",
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, window=60)),
        "window 60 is not a multiple of",
        "use 56",
    )
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, stepz=3)),
        "unknown flag --stepz; did you mean --steps?",
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared, monkeypatch, capsys):
    real = loop.TrainStep.forward
    calls = {"n": 0}

    def forward(self, inputs, target):
        calls["n"] += 1
        losses = real(self, inputs, target)
        return {**losses, "loss": losses["loss"] * float("nan")} if calls["n"] == 5 else losses

    monkeypatch.setattr(loop.TrainStep, "forward", forward)
    run = tmp_path / "runs" / "nan"
    _one_line(
        *run_cli(monkeypatch, capsys, None, name="nan", **tiny_overrides(tmp_path, prepared, eval_every=2)),
        "loss became nan at step 5",
        f"{run / 'checkpoint_last'} (step 4)",
        "lower --lr",
    )
    assert json.loads((run / "checkpoint_last.json").read_text())["info"]["step"] == 4
    weights = load_file(run / "checkpoint_last.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_gpu_out_of_memory_says_what_to_lower(tmp_path, prepared, monkeypatch, capsys):
    _crash_at(monkeypatch, 2, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    _one_line(
        *run_cli(monkeypatch, capsys, None, **tiny_overrides(tmp_path, prepared, batch_size=8)),
        "ran out of memory while training",
        "lower --batch-size (now 8) or --crop (now 56)",
    )


def test_no_cache_trains_on_live_views_to_the_same_result(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=10, eval_every=10, precision="fp32")
    assert run_cli(monkeypatch, capsys, None, name="cached", **settings)[0] == 0
    assert run_cli(monkeypatch, capsys, None, name="live", **{"no-cache": True}, **settings)[0] == 0
    cached, live = (metrics(tmp_path / "runs" / n)[-1]["miou"] for n in ("cached", "live"))
    assert abs(cached - live) < 0.01  # the same views, fp16-stored features against live fp32 ones
    assert "feature cache" not in (tmp_path / "runs" / "live" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("train_blocks", [0, 1])
def test_two_gloo_processes_match_one_process(tmp_path, prepared, monkeypatch, capsys, train_blocks):
    """`torchrun --nproc_per_node=2` (gloo on CPU) splits each batch; DDP averages the gradients back (of the
    trained backbone block too)."""
    settings = tiny_overrides(
        tmp_path,
        prepared,
        steps=10,
        eval_every=10,
        precision="fp32",
        head_config="{dropout: 0.0}",
        train_blocks=train_blocks,
    )
    assert run_cli(monkeypatch, capsys, None, name="one", **settings)[0] == 0
    args = [
        arg
        for key, value in settings.items()
        for arg in (f"--{key}", json.dumps(value) if isinstance(value, list) else str(value))
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train/train.py",
        "--name",
        "two",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_file(tmp_path / "runs" / n / "checkpoint_last.safetensors") for n in ("one", "two"))
    assert any(k.startswith("backbone.blocks.3.") for k in one) == bool(train_blocks) and one.keys() == two.keys()
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
    overrides = {
        k: v
        for k, v in tiny_overrides(tmp_path, tmp_path, steps=2, eval_every=2).items()
        if k not in ("data_dir", "cache_dir")
    }
    status, err = run_cli(monkeypatch, capsys, None, **overrides)
    assert status == 0, err
    assert (tmp_path / "runs" / "linear_reef_demo_finegrained" / "checkpoint_best.json").is_file()
    assert list(
        (tmp_path / "data" / "cache").glob("tiny_dinov2-*/*/layer_3.npy")
    )  # the cache defaults to DATA_ROOT/cache


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("lr", "-0.001", "lr must be more than 0.0, got -0.001"),
        ("lr", "0", "lr must be more than 0.0"),
        ("warmup_steps", "-5", "warmup_steps must be at least 0, got -5"),
        ("weight_decay", "-1e-4", "weight_decay must be at least 0.0"),
        ("lr", "nan", "lr must be a finite number, got nan"),
        ("lr", "NaN", "lr must be a finite number"),
        ("lr", ".nan", "lr must be a finite number"),
        ("lr", "-inf", "lr must be a finite number, got -inf"),
        ("lr", "-.inf", "lr must be a finite number"),
        ("lr", "1e400", "lr must be a finite number"),
        ("grad_clip", "Infinity", "grad_clip must be a finite number"),
        ("scale_range", "[.nan, 1.0]", "scale_range must be a finite number"),
        ("steps", "0", "steps must be at least 1, got 0"),
        ("steps", "-3", "steps must be at least 1, got -3"),
        ("min_lr_ratio", "1.5", "min_lr_ratio is a fraction of lr"),
        ("batch_size", "17", "batch_size 17 is larger than the data: 4 training images x 4 views = 16"),
    ],
)
def test_values_out_of_range_are_refused_before_any_work(tmp_path, prepared, monkeypatch, capsys, key, value, fragment):
    overrides = tiny_overrides(tmp_path, prepared)
    overrides[key] = value
    _one_line(*run_cli(monkeypatch, capsys, None, **overrides), fragment)
    assert (
        not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    )  # refused before the run folder or cache


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("weight_decay: .nan\n", "weight_decay must be a finite number"),
        ("lr: [1, 2\n", "is not valid YAML at line 2, column 1"),
        ("head: linear\n\tsteps: 3\n", "is not valid YAML"),
        ("just text", "must hold a mapping"),
    ],
)
def test_a_malformed_config_file_is_one_sentence(tmp_path, prepared, monkeypatch, capsys, text, fragment):
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    _one_line(*run_cli(monkeypatch, capsys, str(config), **tiny_overrides(tmp_path, prepared)), fragment)
    config.write_bytes(b"\xff\xfe\x00\x01lr: 1")
    _one_line(*run_cli(monkeypatch, capsys, str(config), **tiny_overrides(tmp_path, prepared)), "is not UTF-8 text")


def test_a_damaged_training_state_says_what_still_works(tmp_path, prepared, monkeypatch, capsys):
    settings = tiny_overrides(tmp_path, prepared, steps=2, eval_every=2)
    assert run_cli(monkeypatch, capsys, None, name="r", **settings)[0] == 0
    state = tmp_path / "runs" / "r" / "train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated
    _one_line(
        *run_cli(monkeypatch, capsys, None, name="r", resume=True, **settings),
        f"{state} cannot be read",
        "start a new run with --name",
        f"--init-from {state.parent}",
    )
    torch.save({"step": 3}, state)  # a torch file, but not a training state
    _one_line(
        *run_cli(monkeypatch, capsys, None, name="r", resume=True, **settings),
        "is not a training state (no classes, head",
    )


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tmp_path, prepared, monkeypatch, capsys):
    """The demo passes --resume once config.yaml exists: a run killed before its first checkpoint must not be stuck."""
    settings = tiny_overrides(tmp_path, prepared, steps=4, eval_every=4)
    with monkeypatch.context() as patch:
        _crash_at(patch, 2, RuntimeError("killed"))
        with pytest.raises(RuntimeError, match="killed"):
            run_cli(monkeypatch, capsys, None, name="early", **settings)
    run = tmp_path / "runs" / "early"
    assert (run / "config.yaml").is_file() and not (run / "train_state.pt").exists()
    status, err = run_cli(monkeypatch, capsys, None, name="early", resume=True, **settings)
    assert status == 0 and "stopped before its first checkpoint; starting it again from step 0" in err, err
    assert [r["step"] for r in metrics(run)] == [4]


def test_a_full_disk_keeps_the_previous_training_state(tmp_path, monkeypatch):
    import errno

    loop.save_state(tmp_path, {"step": 1})
    before = (tmp_path / "train_state.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(loop.UserError, match="train_state.pt: the disk is full"):
        loop.save_state(tmp_path, {"step": 2})
    assert (tmp_path / "train_state.pt").read_bytes() == before and os.listdir(tmp_path) == ["train_state.pt"]


def _train_process(args: list[str], cwd: Path) -> subprocess.Popen:
    """A training subprocess whose output goes to a file: a pipe nobody reads could fill and stall it."""
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    output = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=output, text=True
    )
    process.output = output  # type: ignore[attr-defined]
    return process


def _interrupt_when(process: subprocess.Popen, ready, timeout: float = 240) -> tuple[int, str]:
    """Send Ctrl-C (SIGINT) once `ready()` holds; (exit status, stderr)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"the run ended or hung before the point to interrupt it: {_output(process)[-2000:]}")
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints where it was
        process.wait()
        raise AssertionError(f"no exit 180 s after Ctrl-C: {_output(process)[-3000:]}") from None
    return process.returncode, _output(process)


def _output(process: subprocess.Popen) -> str:
    process.output.seek(0)  # type: ignore[attr-defined]
    return process.output.read()  # type: ignore[attr-defined]


def _logged(run: Path, text: str, times: int = 1):
    return lambda: (run / "train.log").is_file() and (run / "train.log").read_text().count(text) >= times


@pytest.mark.slow
def test_after_ctrl_c_the_advised_command_is_the_one_that_works(tmp_path, prepared):
    """Interrupted after a checkpoint: the advice is the command with --resume, and it resumes. Interrupted before the
    first checkpoint: the same command starts the run again (and so does the demo's --resume)."""
    settings = tiny_overrides(tmp_path, prepared, steps=100_000, eval_every=3, log_every=1)
    args = ["train/train.py"] + [
        part
        for key, value in settings.items()
        for part in (f"--{key}", json.dumps(value) if isinstance(value, list) else str(value))
    ]
    run = tmp_path / "runs" / "linear_toy_toy"
    status, err = _interrupt_when(_train_process(args, REPO), lambda: (run / "train_state.pt").is_file())
    advice = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert status == 130 and len(advice) == 1 and "Traceback" not in err, err[-2000:]
    command = shlex.split(advice[0].split("continue from it with: ", 1)[1])
    assert command[0] == "python" and command[-1] == "--resume"
    status, err = _interrupt_when(_train_process(command[1:], REPO), _logged(run, "resumed at step"))
    assert status == 130 and "error:" not in err and "continue from it with:" in err, err[-2000:]

    fresh = tiny_overrides(tmp_path, prepared, steps=100_000, eval_every=100_000, log_every=1)
    args = ["train/train.py", "--name", "early"] + [
        part
        for key, value in fresh.items()
        for part in (f"--{key}", json.dumps(value) if isinstance(value, list) else str(value))
    ]
    early = tmp_path / "runs" / "early"
    status, err = _interrupt_when(_train_process(args, REPO), _logged(early, "step 2/"))
    assert (
        status == 130 and "rerun the same command to start it again" in err and not (early / "train_state.pt").exists()
    ), err[-2000:]
    status, err = _interrupt_when(
        _train_process(args, REPO), _logged(early, "step 2/", times=2)
    )  # exactly the same command
    assert status == 130 and "already holds a run" not in err and "error:" not in err, err[-2000:]
    status, err = _interrupt_when(
        _train_process(args + ["--resume"], REPO), _logged(early, "step 2/", times=3)
    )  # what the demo runs
    assert status == 130 and "error:" not in err and "starting it again from step 0" in err, err[-2000:]
