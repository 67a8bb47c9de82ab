"""Backbone registry, layer selection, shapes, freezing and padding, on tiny random ViTs."""

from __future__ import annotations

import pytest
import torch

from common.cli import UserError
from models.backbones import BACKBONES, RandomBackboneWarning, build_backbone, default_layers

pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")


def test_default_layers_evenly_spaced_ending_at_last() -> None:
    assert default_layers(12, 4) == [2, 5, 8, 11]
    assert default_layers(24, 4) == [5, 11, 17, 23]
    assert default_layers(40, 4) == [9, 19, 29, 39]
    assert default_layers(12, 1) == [11]


def test_registry_has_every_official_size() -> None:
    for size in ("s", "b", "l", "g"):
        assert f"dinov2_vit{size}14" in BACKBONES and f"dinov2_vit{size}14_reg" in BACKBONES
    for arch in ("s16", "s16plus", "b16", "l16", "h16plus", "7b16"):
        assert f"dinov3_vit{arch}" in BACKBONES


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="dinov2_vits14.*dinov3_vitl16"):
        build_backbone("dinov2_vitz14")


@pytest.mark.parametrize("name", ["tiny_dinov2", "tiny_dinov2_reg", "tiny_dinov3"])
def test_feature_maps_at_patch_resolution_and_padding(name: str) -> None:
    with pytest.warns(RandomBackboneWarning, match="RANDOM"):
        backbone = build_backbone(name, layers=4)
    p = backbone.patch_size
    assert backbone.layers == [0, 1, 2, 3] and backbone.weights_hash == "random"
    maps = backbone(torch.randn(2, 3, 4 * p, 6 * p))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 6)] * 4
    padded = backbone(torch.randn(1, 3, 4 * p + 3, 6 * p - 5))
    assert tuple(padded[0].shape) == (1, 32, 5, 6)


def test_padding_equals_explicit_zero_padding() -> None:
    backbone = build_backbone("tiny_dinov2", layers=[-1])
    image = torch.randn(1, 3, 30, 40)
    explicit = torch.zeros(1, 3, 42, 42)
    explicit[..., :30, :40] = image
    torch.testing.assert_close(backbone(image)[0], backbone(explicit)[0])


def test_frozen_by_default_and_stays_in_eval() -> None:
    backbone = build_backbone("tiny_dinov3")
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.vit.training
    trainable = build_backbone("tiny_dinov3", frozen=False)
    assert all(p.requires_grad for p in trainable.parameters()) and trainable.training


def test_layer_selection_errors_are_user_errors() -> None:
    with pytest.raises(UserError, match="block indices"):
        build_backbone("tiny_dinov2", layers=[7])
    with pytest.raises(UserError, match="cannot take 5 layers"):
        build_backbone("tiny_dinov2", layers=5)
