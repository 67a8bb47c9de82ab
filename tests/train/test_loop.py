"""Pure pieces of the loop: the learning-rate schedule, the step-indexed batches, class weights, config parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.cli import UserError
from models.heads import HEADS
from train.config import load_config, with_default_window
from train.data import inverse_sqrt_weights
from train.loop import Distributed, lr_factor, out_of_memory_advice, step_batches

REPO = Path(__file__).resolve().parents[2]


def test_warmup_then_poly_and_cosine_decay():
    poly = load_config(None, steps=110, warmup_steps=10, lr=1.0, schedule="poly", poly_power=1.0)
    assert [lr_factor(s, poly) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, poly) == pytest.approx(1.0) and lr_factor(60, poly) == pytest.approx(0.5)
    assert lr_factor(110, poly) == pytest.approx(0.0)
    cosine = load_config(None, steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(60, cosine) == pytest.approx(0.1 + 0.9 * 0.5) and lr_factor(110, cosine) == pytest.approx(0.1)


def test_batches_depend_only_on_the_step_and_split_between_processes():
    whole = list(step_batches(10, 4, seed=0, start_step=0, steps=7, dist_info=Distributed()))
    assert list(step_batches(10, 4, seed=0, start_step=5, steps=7, dist_info=Distributed())) == whole[5:]
    epoch0 = [i for batch in whole[:2] for _, i in batch]
    assert len(set(epoch0)) == 8 and {e for batch in whole[:2] for e, _ in batch} == {
        0
    }  # 2 steps per epoch, no repeats
    assert whole[2][0][0] == 1 and whole != list(
        step_batches(10, 4, seed=1, start_step=0, steps=7, dist_info=Distributed())
    )
    halves = [list(step_batches(10, 4, 0, 0, 7, Distributed(rank, 2))) for rank in (0, 1)]
    for step, batch in enumerate(whole):
        assert sorted(halves[0][step] + halves[1][step]) == sorted(batch) and len(halves[0][step]) == 2


def test_inverse_sqrt_class_weights():
    weights = inverse_sqrt_weights(np.array([900, 100, 0, 400]))
    assert weights[2] == 0.0
    present = np.array([weights[0], weights[1], weights[3]])
    assert present.mean() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(3.0) and weights[3] / weights[0] == pytest.approx(1.5)


def test_config_files_overrides_and_their_errors():
    config = load_config(
        "segformer.yaml", lr="0.01", steps=5.0, cache="false", layers="[1, 3]", head_config="{channels: 16}"
    )
    assert (config.head, config.lr, config.steps, config.cache, config.layers, config.head_config) == (
        "segformer",
        0.01,
        5,
        False,
        [1, 3],
        {"channels": 16},
    )
    assert load_config("linear.yaml", layers=4).layers == 4
    for path in sorted((REPO / "train" / "configs").glob("*.yaml")):  # one per head, named after it, and examples
        head = load_config(path).head
        assert head == path.stem or (path.stem not in HEADS and head in HEADS), path.name
    assert load_config("finetune_last2.yaml").train_blocks == 2
    with pytest.raises(UserError, match="unknown config key.*learning_rate"):
        load_config(None, learning_rate=1)
    with pytest.raises(UserError, match="'steps' expects"):
        load_config(None, steps="many")
    with pytest.raises(UserError, match="schedule must be poly or cosine"):
        load_config(None, schedule="step")
    with pytest.raises(UserError, match="config file .* not found"):
        load_config("nope.yaml")


def test_default_window_is_28_patches_of_the_backbone_and_windows_are_the_fewest():
    """Validation and evaluation windows default to 392 px on /14 backbones, 448 on /16; explicit values win."""
    assert with_default_window(load_config(None)).window == 392
    assert with_default_window(load_config(None, backbone="dinov3_vits16")).window == 448
    assert with_default_window(load_config(None, window=224)).window == 224
    assert with_default_window(load_config(None)).crop == 448  # the training crop is its own setting
    assert with_default_window(load_config(None)).window_stride == 392  # the window: 5 x 5 on a 1920-px quadrat
    assert with_default_window(load_config(None, window=448, window_stride=298)).window_stride == 298
    with pytest.raises(UserError, match="unknown backbone 'dinov9'"):
        with_default_window(load_config(None, backbone="dinov9"))
    with pytest.raises(UserError, match="window and window_stride must be positive"):
        load_config(None, window=-14)


def test_out_of_memory_names_the_setting_of_the_phase():
    config = load_config(None, batch_size=16, crop=448, extract_batch_size=32, val_batch_size=4)
    assert "--batch-size (now 16) or --crop (now 448)" in out_of_memory_advice(config, "training")
    assert "--extract-batch-size (now 32)" in out_of_memory_advice(config, "caching features")
    assert "--val-batch-size (now 4)" in out_of_memory_advice(config, "validating")


def test_help_is_answered_without_importing_torch():
    code = "import sys; sys.argv = ['train.py', '--help']; from train.cli import main; main(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--views-per-image" in out and "--resume" in out and out.strip().endswith("False")
    script = subprocess.run(
        [sys.executable, "train/train.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert script.stdout.startswith("usage: python train/train.py")


def test_class_pixel_counts_from_the_manifest_match_the_masks(prepared):
    from prepare.layout import load_prepared
    from train.data import class_pixel_counts, load_samples, read_mask

    counts = class_pixel_counts(load_prepared(prepared), "train")
    masks = [read_mask(s.mask_path) for s in load_samples(prepared)[1]["train"]]
    assert counts.tolist() == np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=3).tolist()


@pytest.mark.parametrize(
    "argv, cache",
    [
        (["--no-cache"], False),
        (["--nocache"], False),
        (["--no_cache", "true"], False),
        (["--cache", "false"], False),
        (["--no_cache", "false"], True),
        ([], True),
    ],
)
def test_boolean_flags_as_users_type_them(monkeypatch, argv, cache):
    from train import cli, loop

    seen = {}
    monkeypatch.setattr(loop, "train", lambda config: seen.setdefault("config", config) and {"main": False})
    monkeypatch.setattr(sys, "argv", ["train.py", *argv, "--init-from", "runs/coarse"])
    cli.main()
    assert seen["config"].cache is cache and seen["config"].init_from == "runs/coarse"


def test_val_stride_is_the_old_name_of_window_stride(tmp_path, capsys):
    old_run_config = tmp_path / "config.yaml"
    old_run_config.write_text("window: 448\nval_stride: 298\n")  # a run folder written before the rename
    assert load_config(old_run_config).window_stride == 298
    assert capsys.readouterr().err == ""
    assert load_config(None, val_stride=224).window_stride == 224
    assert "--val-stride is deprecated; use --window-stride" in capsys.readouterr().err


def test_settings_are_resolved_once_into_a_complete_config(tmp_path):
    """Every empty or -1 key takes the settings' value at the command line; `train` refuses a config left unresolved."""
    from common.settings import Settings
    from train.config import check_resolved, resolve_config
    from train.loop import train

    settings = Settings(
        data_root=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        demo_dataset="reef",
        label_taxonomy="agnostic",
        dino_weights="/weights/dinov2.pth",
        device="cpu",
        seed=7,
        workers=3,
    )
    config = resolve_config(load_config(None), settings)
    assert (
        config.data_dir == str(tmp_path / "data" / "prepared" / "reef_agnostic")
        and config.name == "linear_reef_agnostic"
    )
    assert (config.runs_dir, config.cache_dir) == (str(tmp_path / "runs"), str(tmp_path / "data" / "cache"))
    assert (config.weights, config.device, config.seed, config.workers) == ("/weights/dinov2.pth", "cpu", 7, 3)
    assert (config.window, config.window_stride) == (392, 392)
    check_resolved(config)
    given = resolve_config(
        load_config(None, data_dir=str(tmp_path / "mine"), seed=0, workers=0, device="cuda", name="r"), settings
    )
    assert (given.data_dir, given.seed, given.workers, given.device, given.name) == (
        str(tmp_path / "mine"),
        0,
        0,
        "cuda",
        "r",
    )
    with pytest.raises(ValueError, match="not resolved.*data_dir.*seed"):
        train(load_config(None))
