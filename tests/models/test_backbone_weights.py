"""Loading weights in every format users have, proven by equal features; clear errors otherwise.

Hugging Face models are built from small configs with random weights (perturbed so that no bias
or layer scale is trivially zero or one), saved with `save_pretrained`, loaded by `build_backbone`
and compared with the model that wrote them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from dino_reference import official_features, random_official_state_dict
from safetensors.torch import save_file
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
)

from common.cli import UserError
from models.backbones import BACKBONES, build_backbone, build_from_spec, shrink
from models.weights import read_weights

pytestmark = pytest.mark.filterwarnings("ignore::models.backbones.RandomBackboneWarning")

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2)
LAYERS = [0, 1, 2, 3]


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=g))
    return model.eval()


def hf_maps(
    model: torch.nn.Module,
    norm: torch.nn.Module,
    images: torch.Tensor,
    prefix: int,
    patch: int,
    layers: list[int] = LAYERS,
) -> list[torch.Tensor]:
    """The HF model's per-layer patch tokens after the final norm, as maps (get_intermediate_layers style)."""
    with torch.no_grad():
        hidden = model(pixel_values=images, output_hidden_states=True).hidden_states
    rows, cols = images.shape[-2] // patch, images.shape[-1] // patch
    return [norm(hidden[i + 1])[:, prefix:].transpose(1, 2).reshape(len(images), -1, rows, cols) for i in layers]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def test_hf_dinov2_folder(tmp_path: Path) -> None:
    model = perturbed(Dinov2Model(Dinov2Config(**TINY, image_size=518, patch_size=14)))
    model.save_pretrained(tmp_path / "hf")
    backbone = build_backbone("tiny_dinov2", weights=str(tmp_path / "hf"), layers=4)
    native = torch.randn(1, 3, 518, 518)
    assert max_diff(backbone(native), hf_maps(model, model.layernorm, native, 1, 14)) < 1e-4
    # At other sizes transformers' Dinov2Model resamples positions by size (not the official rule);
    # ours follows the official rule, checked against the independent reference.
    official = read_weights(str(tmp_path / "hf")).state_dict
    small = torch.randn(1, 3, 224, 308)
    assert max_diff(backbone(small), official_features(official, small, LAYERS, 2, "dinov2")) < 1e-4
    assert max_diff(hf_maps(model, model.layernorm, small, 1, 14), backbone(small)) > 1e-3


def test_hf_dinov2_giant_swiglu_folder(tmp_path: Path) -> None:
    """ViT-g on the hub: `mlp.weights_in` / `weights_out` become the official `w12` / `w3`."""
    config = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=518, patch_size=14, use_swiglu_ffn=True
    )
    model = perturbed(Dinov2Model(config))
    model.save_pretrained(tmp_path / "hf")
    official = read_weights(str(tmp_path / "hf")).state_dict
    assert official["blocks.0.mlp.w12.weight"].shape == (256, 48) and "blocks.0.mlp.w3.bias" in official
    backbone = build_from_spec(
        shrink(BACKBONES["dinov2_vitg14"], embed_dim=48, depth=2), weights=tmp_path / "hf", layers=2
    )
    native = torch.randn(1, 3, 518, 518)
    expected = hf_maps(model, model.layernorm, native, 1, 14, layers=[0, 1])
    assert max_diff(backbone(native), expected) < 1e-4
    assert max_diff(official_features(official, native, [0, 1], 2, "dinov2"), expected) < 1e-4


def test_hf_dinov2_with_registers_folder_at_every_size(tmp_path: Path) -> None:
    model = perturbed(
        Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**TINY, image_size=518, patch_size=14, num_register_tokens=4)
        )
    )
    model.save_pretrained(tmp_path / "hf")
    backbone = build_backbone("tiny_dinov2_reg", weights=str(tmp_path / "hf"), layers=4)
    for height, width in [(224, 224), (448, 448), (518, 518), (224, 336)]:
        images = torch.randn(1, 3, height, width)
        assert max_diff(backbone(images), hf_maps(model, model.layernorm, images, 5, 14)) < 1e-4, (height, width)


@pytest.mark.parametrize("gated", [False, True])
def test_hf_dinov3_folder_at_every_size(tmp_path: Path, gated: bool) -> None:
    """transformers' DINOv3ViTModel follows the official algorithm (reference), and we equal it."""
    config = DINOv3ViTConfig(
        **TINY,
        intermediate_size=128,
        num_register_tokens=4,
        patch_size=16,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
    )
    model = perturbed(DINOv3ViTModel(config))
    model.save_pretrained(tmp_path / "hf")
    official = read_weights(str(tmp_path / "hf"))
    assert official.family == "dinov3" and official.state_dict["blocks.0.attn.qkv.bias"][32:64].abs().max() == 0
    state = dict(official.state_dict, **{"rope_embed.periods": official.rope_periods})
    spec = shrink(BACKBONES["dinov3_vits16plus" if gated else "dinov3_vits16"])
    backbone = build_from_spec(spec, weights=str(tmp_path / "hf"), layers=4)
    for height, width in [(224, 224), (512, 512), (320, 480)]:
        images = torch.randn(1, 3, height, width)
        expected = hf_maps(model, model.norm, images, 5, 16)
        assert max_diff(official_features(state, images, LAYERS, 2, "dinov3"), expected) < 1e-4
        assert max_diff(backbone(images), expected) < 1e-4, (height, width)


def test_official_file_hash_and_lone_safetensors(tmp_path: Path) -> None:
    state = random_official_state_dict("dinov3", 32, 4, 2, 4)
    torch.save(state, tmp_path / "dinov3.pth")
    save_file(state, tmp_path / "dinov3.safetensors")
    from_pth = build_backbone("tiny_dinov3", weights=tmp_path / "dinov3.pth")
    from_st = build_backbone("tiny_dinov3", weights=str(tmp_path / "dinov3.safetensors"))
    assert from_pth.weights_hash == hashlib.sha256((tmp_path / "dinov3.pth").read_bytes()).hexdigest()
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(from_pth(images), from_st(images))


def test_training_checkpoint_wrapper_is_unwrapped(tmp_path: Path) -> None:
    state = random_official_state_dict("dinov2", 32, 4, 2, 0)
    heads = {"dino_head.mlp.0.weight": torch.zeros(8, 32), "ibot_head.last_layer.weight": torch.zeros(8, 8)}
    torch.save(
        {"teacher": {**heads, **{f"backbone.{k}": v for k, v in state.items()}}, "iteration": 7}, tmp_path / "train.pth"
    )
    torch.save(state, tmp_path / "plain.pth")
    images = torch.randn(1, 3, 56, 56)
    wrapped = build_backbone("tiny_dinov2", weights=str(tmp_path / "train.pth"))
    torch.testing.assert_close(
        wrapped(images), build_backbone("tiny_dinov2", weights=str(tmp_path / "plain.pth"))(images)
    )


def test_file_of_another_architecture_names_the_mismatch_and_the_fitting_backbone(tmp_path: Path) -> None:
    torch.save(random_official_state_dict("dinov2", 32, 4, 2, 4), tmp_path / "reg.pth")
    with pytest.raises(UserError, match=r"does not fit backbone tiny_dinov2: .*4 registers.*use tiny_dinov2_reg"):
        build_backbone("tiny_dinov2", weights=str(tmp_path / "reg.pth"))
    torch.save(random_official_state_dict("dinov2", 384, 12, 6, 0), tmp_path / "vits.pth")
    with pytest.raises(UserError, match=r"embed_dim 384, 12 blocks.*use dinov2_vits14$"):
        build_backbone("dinov2_vitb14", weights=str(tmp_path / "vits.pth"))
    torch.save(random_official_state_dict("dinov3", 32, 4, 2, 4), tmp_path / "v3.pth")
    with pytest.raises(UserError, match="DINOV3 ViT.*use tiny_dinov3"):
        build_backbone("tiny_dinov2_reg", weights=str(tmp_path / "v3.pth"))


def test_same_shape_but_different_layers_lists_the_keys(tmp_path: Path) -> None:
    """A ViT-S+-style file (SwiGLU) given to a ViT-S-style backbone: same width and depth, other MLP tensors."""
    torch.save(random_official_state_dict("dinov3", 32, 4, 2, 4, swiglu=True), tmp_path / "splus.pth")
    with pytest.raises(UserError, match=r"missing: blocks\.0\.mlp\.fc1\.bias.*unexpected: blocks\.0\.mlp\.fc1_g\.bias"):
        build_backbone("tiny_dinov3", weights=str(tmp_path / "splus.pth"))


def test_unreadable_or_missing_weights_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        build_backbone("tiny_dinov2", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        build_backbone("tiny_dinov2", weights=str(tmp_path / "junk.pth"))
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="unrecognised weights"):
        build_backbone("tiny_dinov2", weights=str(tmp_path / "other.pth"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="no \\*.safetensors"):
        build_backbone("tiny_dinov2", weights=str(tmp_path / "empty_dir"))


def test_hub_download_offline_is_a_user_error() -> None:
    with pytest.raises(UserError, match="could not download facebook/dinov2-small"):
        build_backbone("dinov2_vits14", weights="hub")
