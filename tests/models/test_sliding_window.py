"""Sliding-window inference: exact reconstruction, blending of overlaps, borders, small images, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sliding_window import predict_logits, window_starts


def pixelwise(windows: torch.Tensor) -> torch.Tensor:
    """A model whose logits depend on each pixel alone: the whole image must come back exactly."""
    x = windows.float()
    return torch.stack([x[:, 0], 2 * x[:, 1], x[:, 2] - x[:, 0]], dim=1)


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("size", [(37, 53), (16, 16), (10, 12), (40, 9)])
@pytest.mark.parametrize("crop,stride", [(16, 10), (16, 16), ((12, 20), (5, 7))])
def test_pixelwise_model_reconstructs_exactly(size, crop, stride) -> None:
    img = image(*size)
    out = predict_logits(pixelwise, img, 3, crop, stride, batch_size=3)
    assert out.shape == (3, *size)
    assert torch.equal(out, pixelwise(img[None])[0])


def test_smooth_blend_also_reconstructs() -> None:
    img = image(30, 41)
    out = predict_logits(pixelwise, img, 3, 16, 8, batch_size=2, blend="smooth")
    assert torch.allclose(out, pixelwise(img[None])[0], atol=1e-4)


def test_windows_reach_both_borders_and_are_spread_evenly() -> None:
    assert window_starts(37, 16, 10) == [0, 7, 14, 21]  # not [0, 10, 20, 21]: no 1-pixel sliver at the end
    assert window_starts(36, 16, 10) == [0, 10, 20]
    assert window_starts(10, 16, 10) == [0]
    assert window_starts(1920, 392, 392) == [0, 382, 764, 1146, 1528]  # a quadrat in 5 x 5 windows, 10 px overlaps
    assert window_starts(1920, 448, 298) == [0, 294, 589, 883, 1178, 1472]


@pytest.mark.parametrize("length", [17, 100, 449, 1920, 2000])
@pytest.mark.parametrize("crop,stride", [(16, 16), (16, 5), (392, 392), (448, 298), (448, 100)])
def test_fewest_windows_no_gap_wider_than_stride(length: int, crop: int, stride: int) -> None:
    starts = window_starts(length, crop, stride)
    if crop >= length:
        assert starts == [0]
        return
    gaps = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == length - crop
    assert gaps.max() <= stride and gaps.max() - gaps.min() <= 1
    assert len(starts) - 2 < (length - crop) / stride  # one window fewer would leave a gap wider than stride


def test_overlaps_are_averaged() -> None:
    """Logits = the column inside the window: where two windows overlap, the mean of both columns."""

    def local_column(windows: torch.Tensor) -> torch.Tensor:
        b, _, h, w = windows.shape
        return torch.arange(w, dtype=torch.float32).expand(b, 1, h, w).clone()

    out = predict_logits(local_column, image(4, 14), 1, (4, 8), (4, 6), batch_size=1)
    # windows start at x = 0 and 6: columns 6 and 7 are seen at local 6,7 and 0,1
    expected = torch.tensor([0, 1, 2, 3, 4, 5, 3, 4, 2, 3, 4, 5, 6, 7], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)


def test_result_does_not_depend_on_batch_size() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 5, padding=2).eval()
    forward = lambda w: conv(w.float() / 255)  # noqa: E731 - context-dependent model, unlike pixelwise
    img = image(45, 38)
    results = [predict_logits(forward, img, 4, 16, 11, batch_size=b) for b in (1, 3, 64)]
    assert all(torch.equal(results[0], r) for r in results[1:])
    assert not torch.equal(results[0], forward(img[None])[0])  # windows really cut the context


def test_forward_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="expected 5 classes at window size"):
        predict_logits(pixelwise, image(20, 20), 5, 16, 8)


def test_no_augmentation_is_the_plain_prediction_exactly() -> None:
    from models.sliding_window import NO_TTA, TestTimeAugmentation, predict_logits_tta

    img = image(37, 53, seed=3)
    plain = predict_logits(pixelwise, img, 3, 16, 10, batch_size=3)
    for tta in (NO_TTA, TestTimeAugmentation((1.0,), False), TestTimeAugmentation([1], False)):
        assert torch.equal(predict_logits_tta(pixelwise, img, 3, 16, 10, tta, batch_size=3), plain)


def test_mirror_of_a_mirror_symmetric_model_changes_nothing_and_is_undone() -> None:
    from models.sliding_window import TestTimeAugmentation, predict_logits_tta

    img = image(30, 41, seed=4)
    mirror = TestTimeAugmentation(flip=True)
    plain = predict_logits(pixelwise, img, 3, 16, 10, batch_size=2)
    assert torch.equal(predict_logits_tta(pixelwise, img, 3, 16, 10, mirror, batch_size=2), plain)

    def left_half_is_class_1(windows: torch.Tensor) -> torch.Tensor:
        """Not mirror-symmetric: the mirrored pass says 'right half', so the blend must be 0.5 everywhere."""
        b, _, h, w = windows.shape
        left = (torch.arange(w) < w // 2).float().expand(b, h, w)
        return torch.stack([1 - left, left], dim=1)

    blended = predict_logits_tta(left_half_is_class_1, img, 2, 41, 41, mirror)
    expected = torch.full((2, 30, 41), 0.5)
    expected[:, :, 20] = torch.tensor([1.0, 0.0])[:, None]  # width 41: the middle column is "right" in both passes
    assert torch.equal(blended, expected)


def test_scales_predict_resized_images_and_come_back_at_image_size() -> None:
    from models.sliding_window import TestTimeAugmentation, predict_logits_tta

    seen: list[tuple[int, int]] = []

    def constant(windows: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(windows.shape[-2:]))
        return torch.ones(windows.shape[0], 2, *windows.shape[-2:])

    img = image(40, 60, seed=5)
    tta = TestTimeAugmentation((0.5, 1.0, 1.5), flip=True)
    out = predict_logits_tta(constant, img, 2, 100, 100, tta)
    assert out.shape == (2, 40, 60) and torch.allclose(out, torch.ones(2, 40, 60))
    # one window per scale (the window is larger than every scaled image), mirrored windows in the same batch
    assert seen == [(20, 30), (40, 60), (60, 90)] and tta.passes == 6
    # a pixelwise model at scale 2 and back agrees with the plain prediction on a smooth image
    smooth = torch.linspace(0, 255, 60).round().to(torch.uint8).expand(3, 40, 60).contiguous()
    twice = predict_logits_tta(pixelwise, smooth, 3, 32, 32, TestTimeAugmentation((2.0,)))
    assert (twice - pixelwise(smooth[None])[0]).abs()[:, :, 2:-2].max() < 3


@pytest.mark.parametrize("scales", [(), (0.0,), (-1.0,), (float("nan"),), (5.0,)])
def test_scales_that_cannot_work_are_refused_in_one_sentence(scales) -> None:
    from common.errors import UserError
    from models.sliding_window import TestTimeAugmentation

    with pytest.raises(UserError, match="--tta-scales must be numbers above 0 and at most 4"):
        TestTimeAugmentation(scales)
