"""Prediction: the class map and confidence of a whole image, TTA mirrored back, bf16 only where supported."""

from __future__ import annotations

import numpy as np
import torch

from common.runtime import Runtime
from evaluate.inference import predict_image, window_forward


class ColourModel(torch.nn.Module):
    """Logits from pixel colour: class 1 where red > green, else 0 (TTA must mirror its answer back)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red_wins = (images[:, 0].float() - images[:, 1].float()) / 50
        return torch.stack([-red_wins, red_wins], dim=1)


def test_whole_image_prediction_and_tta() -> None:
    image = np.zeros((50, 70, 3), dtype=np.uint8)
    image[:, :, 1] = 100
    image[10:30, 20:60, 0] = 200
    device = torch.device("cpu")
    for tta in (False, True):
        forward = window_forward(ColourModel(), Runtime(device), tta=tta)
        prediction = predict_image(forward, image, 2, window=32, window_stride=20, batch_size=3, device=device)
        expected = np.zeros((50, 70), dtype=np.uint8)
        expected[10:30, 20:60] = 1
        assert np.array_equal(prediction.mask, expected)
        assert prediction.confidence.min() > 0.5 and prediction.confidence.dtype == np.float32
        assert abs(float(prediction.confidence[20, 40]) - 1 / (1 + np.exp(-4))) < 1e-5


def test_window_setting_is_the_runs_unless_given() -> None:
    from types import SimpleNamespace

    from evaluate.pipeline import window_setting

    spec = SimpleNamespace(window=448, window_stride=298)  # a run trained with an explicit --window_stride
    assert window_setting(spec, None, None) == (448, 298)
    assert window_setting(spec, 392, None) == (392, 392)  # a window alone: the fewest windows of that size
    assert window_setting(spec, None, 224) == (448, 224)
    assert window_setting(spec, 392, 300) == (392, 300)


def test_crop_and_stride_are_deprecated_names_of_window_and_window_stride(monkeypatch, capsys, tmp_path) -> None:
    import pytest

    from common.errors import UserError
    from evaluate import cli, pipeline

    seen = []
    monkeypatch.setattr(pipeline, "evaluate_run", lambda options: seen.append(options))
    cli.evaluate(str(tmp_path), dataset="reef", window=392)
    assert capsys.readouterr().err == ""
    cli.evaluate(str(tmp_path), dataset="reef", crop=448, stride=298)
    assert (
        capsys.readouterr().err.strip()
        == "note: --crop and --stride are deprecated names of --window and --window-stride; use those"
    )
    assert [(o.window, o.window_stride) for o in seen] == [(392, None), (448, 298)]
    with pytest.raises(UserError, match="--window/--window-stride only"):
        cli.evaluate(str(tmp_path), dataset="reef", window=392, crop=448)


def test_evaluate_options_take_every_default_from_the_settings_once(tmp_path) -> None:
    from common.settings import Settings
    from evaluate.pipeline import EvaluateOptions
    from prepare.taxonomy import BUILTIN_DIR

    settings = Settings(
        data_root=tmp_path,
        demo_dataset="reef",
        device="cpu",
        dino_weights="/w.pth",
        taxonomy_dirs=str(tmp_path / "tax"),
        gt_field_name="annotations",
    )
    options = EvaluateOptions.from_settings(
        settings, tmp_path / "run", dataset=None, device=None, weights=None, window=392
    )
    assert (options.dataset, options.device, options.weights, options.gt_field, options.data_root) == (
        "reef",
        "cpu",
        "/w.pth",
        "annotations",
        tmp_path,
    )
    assert options.taxonomy_dirs == (tmp_path / "tax", BUILTIN_DIR) and options.window == 392
    given = EvaluateOptions.from_settings(
        Settings(), tmp_path / "run", dataset="other", device="cuda", weights="/x.pth"
    )
    assert (given.dataset, given.device, given.weights) == ("other", "cuda", "/x.pth")
    assert (
        EvaluateOptions.from_settings(Settings(dino_weights=""), tmp_path).weights is None
    )  # no weights: a random backbone


def test_tta_flags_reach_the_options_and_slips_stop_before_any_work(monkeypatch, tmp_path) -> None:
    import pytest

    from common.cli import parse_args, spec_from_function
    from common.errors import UserError
    from evaluate import cli, pipeline

    seen = []
    monkeypatch.setattr(pipeline, "evaluate_run", lambda options: seen.append(options))
    argv = ["--run", str(tmp_path), "--dataset", "reef", "--tta", "--tta-scales", "0.75,1,1.25"]
    cli.evaluate(**parse_args(spec_from_function(cli.evaluate), argv))
    assert seen[0].augmentation.scales == (0.75, 1.0, 1.25) and seen[0].augmentation.flip
    assert seen[0].augmentation.passes == 6
    with pytest.raises(UserError, match="--tta-scales expects finite numbers separated by commas"):
        parse_args(spec_from_function(cli.evaluate), ["--run", "r", "--tta-scales", "big"])
    for scales in ([0, 1], [1, 9]):
        with pytest.raises(UserError, match="--tta-scales must be numbers above 0"):
            cli.evaluate(str(tmp_path), dataset="reef", tta_scales=scales)
    assert len(seen) == 1
    monkeypatch.setattr("evaluate.survey.predict_survey", lambda *a: pytest.fail("predicted despite a slip"))
    with pytest.raises(UserError, match="--tta-scales must be numbers above 0"):
        cli.predict(str(tmp_path), dataset="reef", tta_scales=[-1])


def test_predict_image_blends_scales_and_mirror() -> None:
    from models.sliding_window import TestTimeAugmentation

    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, :, 1] = 100
    image[8:40, 16:48, 0] = 200
    device = torch.device("cpu")
    forward = window_forward(ColourModel(), Runtime(device), tta=False)
    plain = predict_image(forward, image, 2, 32, 32, 2, device)
    same = predict_image(forward, image, 2, 32, 32, 2, device, TestTimeAugmentation((1.0,), flip=True))
    assert np.array_equal(plain.mask, same.mask) and np.allclose(plain.confidence, same.confidence)
    blended = predict_image(forward, image, 2, 32, 32, 2, device, TestTimeAugmentation((0.5, 1.0, 2.0), flip=True))
    assert blended.mask.shape == (48, 64)
    assert (blended.mask != plain.mask).mean() < 0.02  # only along the square's outline
