"""Our features equal the official models' at every input size (reference in dino_reference.py).

Random weights written in the official torch.hub format are loaded by `build_backbone` and run at
several sizes; the official forward is recomputed independently. Also shows the two timm
behaviours our backbone corrects, so these tests would fail if it fell back to timm's forward.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from dino_reference import official_features, random_official_state_dict
from timm.models.vision_transformer import checkpoint_filter_fn

from models.backbones import BACKBONES, build_backbone, build_from_spec, shrink, timm_state_dict
from models.weights import OfficialWeights

SIZES = [(224, 224), (448, 448), (518, 518), (224, 336)]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def saved(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "official.pth") -> str:
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize(
    ("name", "registers", "antialias", "offset"), [("tiny_dinov2", 0, False, 0.1), ("tiny_dinov2_reg", 4, True, 0.0)]
)
def test_dinov2_equals_official_at_every_size(
    tmp_path: Path, name: str, registers: int, antialias: bool, offset: float
) -> None:
    state = random_official_state_dict("dinov2", 32, 4, 2, registers)
    backbone = build_backbone(name, weights=saved(tmp_path, state), layers=4)
    for height, width in SIZES:
        images = torch.randn(2, 3, height, width)
        reference = official_features(state, images, backbone.layers, 2, "dinov2", antialias, offset)
        assert max_diff(backbone(images), reference) < 1e-4, (height, width)


def test_timm_position_resampling_is_not_the_official_dinov2_rule(tmp_path: Path) -> None:
    """timm resamples the 37x37 grid by size with antialiasing: right for register models only."""
    state = random_official_state_dict("dinov2", 32, 4, 2, 0)
    vit = timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        num_classes=0,
        dynamic_img_size=True,
        embed_dim=32,
        depth=4,
        num_heads=2,
    ).eval()
    vit.load_state_dict(checkpoint_filter_fn(dict(state), vit))
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        timm_maps = vit.forward_intermediates(images, indices=[3], norm=True, intermediates_only=True)
    assert max_diff(timm_maps, official_features(state, images, [3], 2, "dinov2")) > 0.05


def test_dinov2_vits14_real_size_equals_official(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = random_official_state_dict("dinov2", 384, 12, 6, 0)
    backbone = build_backbone("dinov2_vits14", weights=saved(tmp_path, state), layers=4)
    images = torch.randn(1, 3, 224, 322)
    assert max_diff(backbone(images), official_features(state, images, [2, 5, 8, 11], 6, "dinov2")) < 1e-4


@pytest.mark.parametrize("name", ["dinov2_vitg14", "dinov2_vitg14_reg"])
def test_dinov2_giant_swiglu_layout_equals_official(tmp_path: Path, name: str) -> None:
    """ViT-g's packed SwiGLU (w12, w3) maps onto timm's GluMlp with the gate first."""
    registers = BACKBONES[name].num_registers
    state = random_official_state_dict("dinov2", 48, 2, 2, registers, swiglu=True)
    backbone = build_from_spec(
        shrink(BACKBONES[name], embed_dim=48, depth=2), weights=saved(tmp_path, state), layers=[0, 1]
    )
    images = torch.randn(1, 3, 112, 140)
    reference = official_features(
        state, images, [0, 1], 2, "dinov2", antialias=registers > 0, offset=0.0 if registers else 0.1
    )
    assert max_diff(backbone(images), reference) < 1e-4


@pytest.mark.parametrize("name", ["dinov3_vits16plus", "dinov3_vith16plus"])
def test_dinov3_swiglu_layout_equals_official(tmp_path: Path, name: str) -> None:
    """S+ and H+ use separate SwiGLU w1 (gate), w2, w3, hidden aligned to 8."""
    state = random_official_state_dict("dinov3", 48, 2, 2, 4, swiglu=True)
    backbone = build_from_spec(
        shrink(BACKBONES[name], embed_dim=48, depth=2), weights=saved(tmp_path, state), layers=[0, 1]
    )
    images = torch.randn(1, 3, 128, 176)
    assert max_diff(backbone(images), official_features(state, images, [0, 1], 2, "dinov3")) < 1e-4


def test_dinov3_equals_official_with_the_checkpoint_rope_periods(tmp_path: Path) -> None:
    """Released DINOv3 files store RoPE periods rounded to bfloat16, and the official model uses them.

    timm drops the stored periods and recomputes them in float32: measurably different features.
    """
    state = random_official_state_dict("dinov3", 32, 4, 2, 4)
    state["rope_embed.periods"] = state["rope_embed.periods"].bfloat16().float()
    backbone = build_backbone("tiny_dinov3", weights=saved(tmp_path, state), layers=4)
    timm_like = build_backbone("tiny_dinov3", weights=saved(tmp_path, state), layers=4)
    timm_like.rope_periods = timm_like.vit.rope.periods.clone()  # what timm computes
    for height, width in [(224, 224), (512, 512), (320, 480)]:
        images = torch.randn(1, 3, height, width)
        reference = official_features(state, images, backbone.layers, 2, "dinov3")
        assert max_diff(backbone(images), reference) < 1e-4, (height, width)
        assert max_diff(timm_like(images), reference) > 1e-4, (height, width)


def test_dinov3_keeps_query_and_value_biases(tmp_path: Path) -> None:
    """timm's plain `vit_small_patch16_dinov3` has no qkv bias and silently drops the file's."""
    state = random_official_state_dict("dinov3", 32, 4, 2, 4)
    backbone = build_backbone("tiny_dinov3", weights=saved(tmp_path, state), layers=[3])
    assert backbone.vit.blocks[0].attn.q_bias is not None
    torch.testing.assert_close(backbone.vit.blocks[0].attn.q_bias, state["blocks.0.attn.qkv.bias"][:32])
    images = torch.randn(1, 3, 160, 192)
    no_bias = {k: (torch.zeros_like(v) if k.endswith("qkv.bias") else v) for k, v in state.items()}
    biased_reference = official_features(state, images, [3], 2, "dinov3")
    assert max_diff(backbone(images), biased_reference) < 1e-4
    assert max_diff(official_features(no_bias, images, [3], 2, "dinov3"), biased_reference) > 1e-2


def test_bf16_autocast_stays_close(tmp_path: Path) -> None:
    state = random_official_state_dict("dinov2", 32, 4, 2, 0)
    backbone = build_backbone("tiny_dinov2", weights=saved(tmp_path, state))
    images = torch.randn(1, 3, 224, 224)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = backbone(images)
    exact = backbone(images)[0]
    relative = (low[0].float() - exact).norm() / exact.norm()
    assert 0 < relative < 0.05


# Architecture arguments of the official torch.hub constructors (dinov2/hub/backbones.py, dinov3/hub/backbones.py).
OFFICIAL_ARCHITECTURES = {
    "dinov2_vits14": dict(embed_dim=384, depth=12, heads=6),
    "dinov2_vitb14": dict(embed_dim=768, depth=12, heads=12),
    "dinov2_vitl14": dict(embed_dim=1024, depth=24, heads=16),
    "dinov2_vitg14": dict(embed_dim=1536, depth=40, heads=24, swiglu=True),
    "dinov3_vits16": dict(embed_dim=384, depth=12, heads=6),
    "dinov3_vits16plus": dict(embed_dim=384, depth=12, heads=6, swiglu=True, ffn_ratio=6),
    "dinov3_vitb16": dict(embed_dim=768, depth=12, heads=12),
    "dinov3_vitl16": dict(embed_dim=1024, depth=24, heads=16),
    "dinov3_vith16plus": dict(embed_dim=1280, depth=32, heads=20, swiglu=True, ffn_ratio=6),
    "dinov3_vit7b16": dict(embed_dim=4096, depth=40, heads=32, swiglu=True, ffn_ratio=3, align=64, qkv_bias=False),
}


@pytest.mark.parametrize("name", [n for n in BACKBONES if not n.startswith("tiny_")])
def test_every_registered_backbone_takes_the_official_checkpoint_layout(name: str) -> None:
    """Every tensor of an official file (shapes only, on the meta device) finds its place, even ViT-7B."""
    spec = BACKBONES[name]
    arch = OFFICIAL_ARCHITECTURES[name.removesuffix("_reg")]
    state = random_official_state_dict(spec.family, registers=4 if spec.num_registers else 0, device="meta", **arch)
    with torch.device("meta"):
        vit = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    official = OfficialWeights(state, spec.family, "sha", "official.pth")
    assert set(timm_state_dict(vit, spec, official)) == set(vit.state_dict())
