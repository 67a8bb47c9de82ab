"""Segmenter: normalisation, padding to the patch, frozen backbone, logits at input resolution."""

from __future__ import annotations

import torch
from torch import nn

from models.heads import IGNORE_INDEX, build_head
from models.segmenter import Segmenter
from models.sliding_window import predict_logits

PATCH, DIM = 4, 8


class FakeBackbone(nn.Module):
    """A patchify convolution with the Backbone attributes; records what it was given."""

    name, patch_size, embed_dim, layers, weights_hash = "fake", PATCH, DIM, [0, 1], "random"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.requires_grad_(False)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen = x
        f = self.proj(x)
        return [f, f.tanh()]


def make(head: str = "segformer") -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(FakeBackbone(), build_head(head, DIM, 2, 3, **({"channels": 8} if head != "linear" else {})))


def test_logits_at_input_resolution_for_sizes_off_the_patch_grid() -> None:
    model = make().eval()
    for h, w in [(16, 16), (30, 45), (3, 5)]:
        assert model(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)
    assert make("upernet").eval()(torch.rand(1, 3, 30, 45)).shape == (1, 3, 30, 45)


def test_uint8_and_unit_float_images_are_normalised_the_same_and_padding_is_the_mean() -> None:
    model = make().eval()
    image = torch.randint(0, 256, (1, 3, 10, 13), dtype=torch.uint8)
    a = model(image)
    seen = model.backbone.seen
    b = model(image.float() / 255)
    assert torch.allclose(a, b, atol=1e-6)
    assert seen.shape == (1, 3, 12, 16)
    mean, std = torch.tensor(FakeBackbone.mean).view(3, 1, 1), torch.tensor(FakeBackbone.std).view(3, 1, 1)
    assert torch.allclose(seen[0, :, :10, :13], (image[0] / 255 - mean) / std, atol=1e-6)
    assert seen[0, :, 10:].abs().max() == 0 and seen[0, :, :, 13:].abs().max() == 0


def test_pieces_equal_the_whole() -> None:
    model = make().eval()
    image = torch.rand(2, 3, 22, 17)
    features = model.forward_features(image)
    assert [f.shape for f in features] == [(2, DIM, 6, 5)] * 2
    assert torch.equal(model.head_logits(features, (22, 17)), model(image))


def test_frozen_backbone_gets_no_graph_and_stays_in_eval_mode() -> None:
    model = make().train()
    assert not model.backbone.training and model.head.training
    features = model.forward_features(torch.rand(1, 3, 16, 16))
    assert not features[0].requires_grad
    target = torch.randint(0, 3, (1, 14, 15))
    model.loss(torch.rand(1, 3, 14, 15), target)["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters() if p.requires_grad)


def test_loss_pads_the_target_with_the_ignore_index() -> None:
    model = make("linear").eval()
    model.head.loss_points = 0  # the loss on every pixel, so that both sides see the same pixels
    image, target = torch.rand(1, 3, 14, 15), torch.randint(0, 3, (1, 14, 15))
    padded = torch.full((1, 16, 16), IGNORE_INDEX)
    padded[:, :14, :15] = target
    expected = model.head.loss(model.forward_features(image), padded)["loss"]
    assert torch.equal(model.loss(image, target)["loss"], expected)
    assert (
        model.loss(image, target)["loss"]
        != model.head.loss(model.forward_features(image), torch.nn.functional.pad(target, (0, 1, 0, 2)))["loss"]
    )


def test_sliding_window_over_a_segmenter_is_batch_independent() -> None:
    model = make().eval()
    image = torch.randint(0, 256, (3, 37, 29), dtype=torch.uint8)
    one = predict_logits(model, image, 3, 16, 12, batch_size=1)
    many = predict_logits(model, image, 3, 16, 12, batch_size=8)
    assert one.shape == (3, 37, 29)
    assert torch.allclose(one, many, atol=1e-5)
