"""Every head: output shapes for 1 and 4 inputs at any feature size, losses, and learning a toy task."""

from __future__ import annotations

import pytest
import torch

from common.cli import UserError
from models.heads import HEADS, IGNORE_INDEX, build_head, head_options
from models.heads.base import pixel_losses
from models.heads.points import (
    class_uncertainty,
    importance_points,
    pixel_at,
    point_sample,
    sampled_logits_and_labels,
    scaled_target,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHANNELS, CLASSES, PATCH = 16, 4, 4
TINY = {
    "linear": {},
    "segformer": {"channels": 32},
    "upernet": {"channels": 32},
    "mask2former": {
        "hidden_dim": 32,
        "num_queries": 8,
        "num_layers": 3,
        "num_heads": 4,
        "ffn_dim": 64,
        "loss_points": 256,
    },
    "pmt": {"hidden_dim": 32, "num_queries": 8, "num_layers": 2, "num_heads": 4, "loss_points": 256},
}


def tiny_head(name: str, num_inputs: int = 4, **extra):
    return build_head(name, CHANNELS, num_inputs, CLASSES, **{**TINY[name], **extra})


def toy_batch(
    n: int, generator: torch.Generator, embeddings: torch.Tensor, size: int = 8
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Blobs of classes; each patch's features are its class embedding plus noise; target at pixel resolution."""
    blobs = torch.nn.functional.interpolate(
        torch.randn(n, CLASSES, 3, 3, generator=generator), size=(size, size), mode="bilinear"
    )
    classes = blobs.argmax(dim=1)
    base = embeddings[classes].permute(0, 3, 1, 2)
    features = [base + 0.3 * torch.randn(base.shape, generator=generator) for _ in range(4)]
    target = classes.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    return features, target


def mean_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    ious = []
    for k in range(CLASSES):
        union = ((pred == k) | (target == k)).sum()
        if union:
            ious.append(float(((pred == k) & (target == k)).sum() / union))
    return sum(ious) / len(ious)


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("num_inputs", [1, 4])
@pytest.mark.parametrize("size", [(5, 7), (8, 8), (1, 3)])
def test_output_shape_at_any_feature_size(name: str, num_inputs: int, size: tuple[int, int]) -> None:
    head = tiny_head(name, num_inputs).eval()
    features = [torch.randn(2, CHANNELS, *size) for _ in range(num_inputs)]
    logits = head(features)
    scale = head.output_scale
    assert logits.shape == (2, CLASSES, size[0] * scale, size[1] * scale)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(HEADS))
def test_wrong_number_of_maps_is_a_clear_error(name: str) -> None:
    head = tiny_head(name, 4)
    with pytest.raises(ValueError, match="takes 4 feature maps, got 1"):
        head([torch.randn(1, CHANNELS, 4, 4)])


def test_unknown_head_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="linear, segformer, upernet, mask2former, pmt"):
        build_head("deeplab", 8, 1, 2)


def test_bad_option_is_a_user_error() -> None:
    with pytest.raises(
        UserError, match="unknown option.* widht for head 'linear'; its options: dropout, class_weights, dice_weight"
    ):
        build_head("linear", 8, 1, 2, widht=3)
    assert "num_queries" in head_options("mask2former") and "class_weights" in head_options("mask2former")
    with pytest.raises(UserError, match="hidden_dim \\(30\\) must be a multiple of 4"):
        build_head("mask2former", 8, 4, 2, hidden_dim=30)


def test_ignored_pixels_do_not_count_and_an_all_ignored_batch_is_not_nan() -> None:
    head = tiny_head("segformer", loss_points=0)
    features = [torch.randn(1, CHANNELS, 4, 4) for _ in range(4)]
    target = torch.randint(0, CLASSES, (1, 16, 16))
    partly = target.clone()
    partly[:, :8] = IGNORE_INDEX
    head.eval()
    logits = head(features).detach()
    expected = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear")[..., 8:, :], target[:, 8:]
    )
    assert torch.allclose(head.loss(features, partly)["ce"], expected, atol=1e-5)
    for name in HEADS:
        for extra in ({}, {"loss_points": 0}):
            loss = tiny_head(name, **extra).loss(features, torch.full((1, 16, 16), IGNORE_INDEX))["loss"]
            assert torch.isfinite(loss)


def test_points_fall_where_the_upsampled_logits_are() -> None:
    """A point at a pixel's centre reads exactly the bilinearly upsampled logit and the pixel's label."""
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 16, 20))
    upsampled = torch.nn.functional.interpolate(logits, size=(16, 20), mode="bilinear", align_corners=False)
    ys, xs = torch.randint(0, 16, (2, 30)), torch.randint(0, 20, (2, 30))
    coords = torch.stack([(xs + 0.5) / 20, (ys + 0.5) / 16], dim=-1)
    values = point_sample(logits, coords)
    expected = torch.stack([upsampled[b][:, ys[b], xs[b]] for b in range(2)])
    assert torch.allclose(values, expected, atol=1e-5)
    assert torch.equal(pixel_at(target, coords), torch.stack([target[b][ys[b], xs[b]] for b in range(2)]))


def test_sampled_loss_never_counts_ignored_pixels_and_estimates_the_full_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, CLASSES, 8, 8)
    target = torch.randint(0, CLASSES, (2, 32, 32))
    full = pixel_losses(logits, target)["ce"]
    # uniform points only: an unbiased estimate of the loss on every pixel
    sampled, labels = sampled_logits_and_labels(logits, target, 20000, 3.0, 0.0, IGNORE_INDEX)
    estimate = torch.nn.functional.cross_entropy(sampled, labels)
    assert abs(float(estimate - full)) < 0.03 * float(full)
    # the left half ignored: confident and right there, while the labelled right half is predicted perfectly
    logits = torch.full((1, CLASSES, 8, 8), -10.0)
    logits[:, 1] = 10.0
    target = torch.ones(1, 32, 32, dtype=torch.long)
    target[..., :16] = IGNORE_INDEX
    head = tiny_head("linear", 1, dropout=0.0, loss_points=512)
    head.forward = lambda features: logits  # type: ignore[method-assign]
    assert float(head.loss([], target)["ce"]) < 1e-6
    target[..., :16] = 2  # the same pixels labelled: now they cost
    assert float(head.loss([], target)["ce"]) > 5


def test_importance_sampling_puts_most_points_where_the_prediction_is_uncertain() -> None:
    torch.manual_seed(0)
    logits = torch.zeros(1, CLASSES, 16, 16)
    logits[:, 0] = 10.0  # certain everywhere ...
    logits[:, 0, :, 6:8] = 0.0  # ... but in a band an eighth of the image wide
    target = torch.zeros(1, 64, 64, dtype=torch.long)
    _, labels = sampled_logits_and_labels(logits, target, 1000, 3.0, 0.75, IGNORE_INDEX)
    coords = importance_points(
        lambda c: class_uncertainty(point_sample(logits, c)), 1, 1000, 3.0, 0.75, torch.device("cpu")
    )
    in_band = ((coords[0, :, 0] > 5 / 16) & (coords[0, :, 0] < 9 / 16)).float().mean()
    assert in_band > 0.6, in_band  # uniform points would put 25% there
    assert labels.shape == (1, 1000)


def test_loss_at_reduced_resolution() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, CLASSES, (1, 32, 32))
    small = scaled_target(target, 0.25)
    assert small.shape == (1, 8, 8) and torch.equal(small, target[:, 2::4, 2::4])
    features = [torch.randn(1, CHANNELS, 8, 8)]
    full, quarter = (
        tiny_head("linear", 1, loss_points=0).eval(),
        tiny_head("linear", 1, loss_points=0, loss_scale=0.25).eval(),
    )
    quarter.load_state_dict(full.state_dict())
    expected = torch.nn.functional.cross_entropy(full(features), small)  # logits at 8x8 are the 8x8 target's resolution
    assert torch.allclose(quarter.loss(features, target)["ce"], expected, atol=1e-5)
    assert not torch.allclose(full.loss(features, target)["ce"], expected, atol=1e-3)


def test_loss_options_out_of_range_are_user_errors() -> None:
    for bad in (
        {"loss_points": -1},
        {"loss_scale": 0.0},
        {"oversample_ratio": 0.5},
        {"importance_ratio": 2.0},
        {"loss_scale": 0.5},
    ):
        with pytest.raises(UserError, match="loss"):
            build_head("linear", 8, 1, 2, **bad)


def test_class_weights_and_dice_change_the_loss() -> None:
    torch.manual_seed(0)
    features = [torch.randn(2, CHANNELS, 4, 4)]
    target = torch.randint(0, CLASSES, (2, 16, 16))
    plain = tiny_head("linear", 1).eval()
    state = plain.state_dict()
    weighted = tiny_head("linear", 1, class_weights=[1.0, 5.0, 1.0, 1.0], dice_weight=1.0).eval()
    weighted.load_state_dict(state)
    a, b = plain.loss(features, target), weighted.loss(features, target)
    assert set(b) == {"loss", "ce", "dice"} and 0 < b["dice"] < 1
    assert not torch.isclose(a["ce"], b["ce"])
    assert "class_weights" not in weighted.state_dict()  # a training choice, not a model weight


@pytest.mark.parametrize(
    "name,extra",
    [pytest.param(n, {}, id=n) for n in HEADS]
    + [
        pytest.param("mask2former", {"loss_points": 0}, id="mask2former-full-masks"),
        pytest.param("pmt", {"loss_points": 0, "mask_scale": 1}, id="pmt-full-masks-at-patch-resolution"),
        pytest.param("linear", {"loss_points": 0}, id="linear-every-pixel"),
        pytest.param("segformer", {"loss_points": 0, "loss_scale": 0.5}, id="segformer-half-resolution"),
    ],
)
def test_head_learns_a_toy_task(name: str, extra: dict) -> None:
    """Loss falls a lot and held-out mIoU ends far above chance (~0.25 for 4 classes)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(CLASSES, CHANNELS, generator=generator)
    train = [toy_batch(8, generator, embeddings) for _ in range(4)]
    features_val, target_val = toy_batch(16, generator, embeddings)
    head = tiny_head(name, **extra)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        features, target = train[step % len(train)]
        loss = head.loss(features, target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.eval()
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(head(features_val), size=target_val.shape[-2:], mode="bilinear")
    miou = mean_iou(logits.argmax(1), target_val)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    assert miou > 0.8, miou


def test_mask2former_matches_each_class_to_the_query_that_predicts_it() -> None:
    head = tiny_head("mask2former")
    target = torch.zeros(16, 16, dtype=torch.long)
    target[:, 5:11], target[:, 11:] = 2, 3
    labels = torch.tensor([0, 2, 3])
    masks = (target[None] == labels[:, None, None]).float()
    class_logits = torch.zeros(8, CLASSES + 1)
    class_logits[:, CLASSES] = 5.0  # every query says "no object"...
    mask_logits = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(0))
    for query, k in [(1, 0), (5, 1), (6, 2)]:  # ...but three, each of which predicts one class well
        class_logits[query, labels[k]] = 10.0
        mask_logits[query] = 20 * masks[k] - 10
    rows, cols = head._match(class_logits, mask_logits, labels, masks, torch.ones(16, 16))
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 5, 2: 6}


def test_pmt_runs_queries_and_patch_tokens_jointly_and_shares_the_mask_classification_losses() -> None:
    from models.heads.mask2former import Mask2FormerHead
    from models.heads.mask_classification import MaskClassificationHead
    from models.heads.pmt import PMTHead

    assert PMTHead.loss is Mask2FormerHead.loss is MaskClassificationHead.loss  # one implementation, not a copy
    head = tiny_head("pmt").eval()
    assert head.sources == [0, 3] and head.output_scale == 4
    features = [torch.randn(1, CHANNELS, 5, 6) for _ in range(4)]
    ((class_logits, mask_logits),) = head.decode(features)
    assert class_logits.shape == (1, 8, CLASSES + 1) and mask_logits.shape == (1, 8, 20, 24)
    # one patch changed: every query's class changes too (joint attention), not only masks at that patch
    changed = [f.clone() for f in features]
    changed[0][..., 2, 3] = torch.randn(CHANNELS)
    ((other_classes, _),) = head.decode(changed)
    assert (other_classes - class_logits).abs().amax(dim=-1).min() > 1e-4
    with pytest.raises(UserError, match="mask_scale must be 1, 2, 4, 8"):
        tiny_head("pmt", mask_scale=3)


def test_pmt_trains_every_block_s_prediction_and_infers_from_the_last() -> None:
    """Deep supervision: in training each block predicts (earlier ones at patch resolution) and every stage's
    loss counts; in evaluation only the last block's prediction is made."""
    torch.manual_seed(0)
    head = tiny_head("pmt", num_layers=3)
    features = [torch.randn(2, CHANNELS, 5, 6) for _ in range(4)]
    stages = head.train().decode(features)
    assert [m.shape[-2:] for _, m in stages] == [(5, 6), (5, 6), (20, 24)]
    assert all(c.shape == (2, 8, CLASSES + 1) for c, _ in stages)
    (last,) = head.eval().decode(features)
    assert torch.equal(last[0], stages[-1][0]) and torch.equal(last[1], stages[-1][1])
    target = torch.randint(0, CLASSES, (2, 20, 24))
    head.train()
    torch.manual_seed(1)
    every_stage = head.loss(features, target)["loss"].item()
    head.decode = lambda f: type(head).decode(head, f)[-1:]  # type: ignore[method-assign]
    torch.manual_seed(1)
    assert head.loss(features, target)["loss"].item() < every_stage  # the earlier stages' losses are in the sum


def test_segformer_folded_projections_are_project_concatenate_fuse_with_the_same_gradients() -> None:
    """The per-layer combined matrices give the former computation's logits and parameter gradients exactly,
    with maps of different sizes too (each projected at its own size, then upsampled)."""
    from models.heads.base import upsample_to

    torch.manual_seed(0)
    head = tiny_head("segformer", dropout=0.0)
    features = [torch.randn(2, CHANNELS, 6, 5), torch.randn(2, CHANNELS, 3, 3)] + [
        torch.randn(2, CHANNELS, 6, 5) for _ in range(2)
    ]
    target = torch.randint(0, CLASSES, (2, 24, 20))

    def former(maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        x = torch.cat([upsample_to(p(f), size) for p, f in zip(head.projections, maps)], dim=1)
        return head.classifier(head.fuse(x))

    head.loss_points = 0  # the loss on every pixel: no random points, so both losses see the same pixels
    expected = pixel_losses(former(features), target)["loss"]
    expected_grads = torch.autograd.grad(expected, list(head.parameters()))
    got = head.loss(features, target)["loss"]
    got_grads = torch.autograd.grad(got, list(head.parameters()))
    assert torch.allclose(got, expected, atol=1e-5)
    for (name, _), a, b in zip(head.named_parameters(), got_grads, expected_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert torch.allclose(head(features), former(features), atol=1e-5)
    calls: list[int] = []
    head.fuse[0].register_forward_hook(lambda *_: calls.append(1))
    head(features)
    assert not calls  # the concatenated map is never built: the fuse convolution itself never runs


def test_class_uncertainty_is_minus_the_margin_of_the_two_best_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    for classes in (1, 2, 3, 17):
        logits = torch.randn(3, classes, 50, generator=generator)
        top2 = logits.topk(min(2, classes), dim=1).values
        expected = -logits[:, 0].abs() if classes == 1 else top2[:, 1] - top2[:, 0]
        assert torch.equal(class_uncertainty(logits), expected)
    tied = torch.tensor([[[1.0], [4.0], [4.0], [2.0]]])  # two best classes equal: no margin at all
    assert class_uncertainty(tied).item() == 0.0
