"""Frozen DINOv2 / DINOv3 ViT backbones, by name, giving feature maps equal to the official models'.

`BACKBONES` is the registry: each name is a `BackboneSpec` (data, as timm keeps its configs).
`build_backbone(name, weights, layers, frozen)` builds the timm model for it, loads weights from
any supported format (see `models.weights`) and wraps it in `Backbone`, whose forward runs the
tokens the official way (position encodings from `models.position`), so features equal those of
`get_intermediate_layers(..., reshape=True, norm=True)` of the official code at every input size.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import timm
import torch
import torch.nn.functional as F
from timm.models import eva, vision_transformer
from torch import nn

from common.errors import UserError
from models.position import DINOV2_REG_RULE, DINOV2_RULE, PosEmbedRule, resample_pos_grid, rope_periods, rope_sin_cos
from models.weights import OfficialWeights, read_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The timm classes our specs build: DINOv2 is timm's VisionTransformer, DINOv3 its Eva.
ViT = vision_transformer.VisionTransformer | eva.Eva


class RandomBackboneWarning(UserWarning):
    """The backbone has no pretrained weights, so its features carry no meaning."""


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone: which timm architecture, and the official facts our forward follows."""

    name: str
    family: str  # "dinov2" (learned position grid) or "dinov3" (rotary positions)
    timm_name: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    num_registers: int = 0
    pos_rule: PosEmbedRule | None = None  # DINOv2 only
    hf_repo: str = ""  # Hugging Face repository for `weights="hub"`
    timm_overrides: dict = field(default_factory=dict)  # timm architecture arguments (see `shrink`)


def _dinov2(size: str, timm_size: str, embed_dim: int, depth: int, heads: int) -> list[BackboneSpec]:
    return [
        BackboneSpec(
            f"dinov2_vit{size}14",
            "dinov2",
            f"vit_{timm_size}_patch14_dinov2",
            14,
            embed_dim,
            depth,
            heads,
            pos_rule=DINOV2_RULE,
            hf_repo=f"facebook/dinov2-{timm_size}",
        ),
        BackboneSpec(
            f"dinov2_vit{size}14_reg",
            "dinov2",
            f"vit_{timm_size}_patch14_reg4_dinov2",
            14,
            embed_dim,
            depth,
            heads,
            num_registers=4,
            pos_rule=DINOV2_REG_RULE,
            hf_repo=f"facebook/dinov2-with-registers-{timm_size}",
        ),
    ]


def _dinov3(arch: str, timm_name: str, embed_dim: int, depth: int, heads: int) -> BackboneSpec:
    return BackboneSpec(
        f"dinov3_vit{arch}",
        "dinov3",
        timm_name,
        16,
        embed_dim,
        depth,
        heads,
        num_registers=4,
        hf_repo=f"facebook/dinov3-vit{arch}-pretrain-lvd1689m",
    )


# The official DINOv3 S/S+/B/L/H+ models have q and v biases (k masked to zero): timm's `_qkvb`
# variants keep them; the plain timm variants drop them, which changes features of any file whose
# biases are not all zero. ViT-7B has no qkv bias.
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        *_dinov2("s", "small", 384, 12, 6),
        *_dinov2("b", "base", 768, 12, 12),
        *_dinov2("l", "large", 1024, 24, 16),
        *_dinov2("g", "giant", 1536, 40, 24),
        _dinov3("s16", "vit_small_patch16_dinov3_qkvb", 384, 12, 6),
        _dinov3("s16plus", "vit_small_plus_patch16_dinov3_qkvb", 384, 12, 6),
        _dinov3("b16", "vit_base_patch16_dinov3_qkvb", 768, 12, 12),
        _dinov3("l16", "vit_large_patch16_dinov3_qkvb", 1024, 24, 16),
        _dinov3("h16plus", "vit_huge_plus_patch16_dinov3_qkvb", 1280, 32, 20),
        _dinov3("7b16", "vit_7b_patch16_dinov3", 4096, 40, 32),
    ]
}


def shrink(spec: BackboneSpec, name: str = "", embed_dim: int = 32, depth: int = 4, num_heads: int = 2) -> BackboneSpec:
    """`spec` at toy size, same token layout, position rule and timm architecture: fast random ViTs for tests."""
    size = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    return replace(
        spec,
        name=name or f"{spec.name}_shrunk",
        hf_repo="",
        timm_overrides=size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )


# Tiny random ViTs (embed_dim 32, 4 blocks) registered by name, so that tests and quick demos of
# every stage, and their checkpoints, can refer to them like any other backbone.
for _tiny, _real in [
    ("tiny_dinov2", "dinov2_vits14"),
    ("tiny_dinov2_reg", "dinov2_vits14_reg"),
    ("tiny_dinov3", "dinov3_vits16"),
]:
    BACKBONES[_tiny] = shrink(BACKBONES[_real], _tiny)


def get_spec(name: str) -> BackboneSpec:
    """The spec registered under `name`, or a UserError that lists the known names."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def default_layers(num_layers: int, n: int) -> list[int]:
    """`n` block indices evenly spaced over `num_layers`, ending at the last (12, 4 -> [2, 5, 8, 11])."""
    if not 1 <= n <= num_layers:
        raise UserError(f"cannot take {n} layers from a backbone with {num_layers} blocks")
    return [round((i + 1) * num_layers / n) - 1 for i in range(n)]


def _resolve_layers(layers: int | Sequence[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return [num_layers - 1]
    if isinstance(layers, int):
        return default_layers(num_layers, layers)
    resolved = sorted({i + num_layers if i < 0 else i for i in layers})
    if not resolved or resolved[0] < 0 or resolved[-1] >= num_layers:
        raise UserError(f"layers {list(layers)} must be block indices in [0, {num_layers - 1}]")
    return resolved


class Backbone(nn.Module):
    """A DINO ViT returning one feature map per selected block, at 1/patch resolution.

    `forward(x: [B,3,H,W])` -> list of [B, embed_dim, ceil(H/p), ceil(W/p)], in increasing block
    order, each passed through the final norm (as the official `get_intermediate_layers(norm=True)`).
    Images whose sides are not multiples of the patch are zero-padded on the bottom and right.
    """

    rope_periods: torch.Tensor  # a buffer, registered for the DINOv3 (rotary position) family only

    def __init__(
        self, spec: BackboneSpec, vit: ViT, layers: list[int], weights_hash: str, periods: torch.Tensor | None
    ):
        super().__init__()
        self.spec = spec
        self.vit = vit
        self.name = spec.name
        self.patch_size = spec.patch_size
        self.embed_dim = spec.embed_dim
        self.num_layers = len(vit.blocks)
        self.layers = layers
        self.weights_hash = weights_hash
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.frozen = False
        if periods is not None:
            self.register_buffer("rope_periods", periods.float(), persistent=False)

    def freeze(self) -> Backbone:
        """No gradients and eval mode, kept even when a parent module calls `.train()`."""
        self.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        p = self.patch_size
        height, width = images.shape[-2:]
        rows, cols = math.ceil(height / p), math.ceil(width / p)
        if (rows * p, cols * p) != (height, width):
            images = F.pad(images, (0, cols * p - width, 0, rows * p - height))
        patches = self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        if self.spec.family == "dinov2":
            tokens, block_kwargs = self._dinov2_tokens(patches, rows, cols), {}
        else:
            tokens, block_kwargs = (
                self._dinov3_tokens(patches),
                {"rope": torch.cat(rope_sin_cos(self.rope_periods, rows, cols), -1)},
            )
        prefix = 1 + self.spec.num_registers
        maps = []
        for index, block in enumerate(self.vit.blocks[: self.layers[-1] + 1]):
            tokens = block(tokens, **block_kwargs)
            if index in self.layers:
                features = self.vit.norm(tokens[:, prefix:])
                maps.append(features.transpose(1, 2).reshape(len(images), -1, rows, cols))
        return maps

    def _dinov2_tokens(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """cls + position, patches + resampled positions, then registers after cls (official order)."""
        vit = self.vit
        pos: torch.Tensor | None = vit.pos_embed
        cls: torch.Tensor | None = vit.cls_token
        rule = self.spec.pos_rule
        if pos is None or cls is None or rule is None:
            raise ValueError(
                f"backbone {self.spec.name}: DINOv2 tokens need a position grid, a cls token and a pos_rule"
            )
        if not vit.no_embed_class:  # timm keeps the cls position inside pos_embed for the original models
            cls, pos = cls + pos[:, :1], pos[:, 1:]
        patches = patches + resample_pos_grid(pos, rows, cols, rule)
        parts = [cls.expand(len(patches), -1, -1)]
        if vit.reg_token is not None:
            parts.append(vit.reg_token.expand(len(patches), -1, -1))
        return torch.cat([*parts, patches], dim=1)

    def _dinov3_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        if vit.cls_token is None or vit.reg_token is None:
            raise ValueError(f"backbone {self.spec.name}: DINOv3 tokens need a cls token and register tokens")
        batch = len(patches)
        return torch.cat([vit.cls_token.expand(batch, -1, -1), vit.reg_token.expand(batch, -1, -1), patches], dim=1)


def _create_vit(spec: BackboneSpec) -> ViT:
    # A fixed seed makes "random" one reproducible backbone: a head trained on it still fits when reloaded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_overrides)
    if not isinstance(vit, ViT):
        raise TypeError(f"timm model {spec.timm_name} is a {type(vit).__name__}, not a VisionTransformer or Eva")
    return vit


def _check_architecture(spec: BackboneSpec, weights: OfficialWeights) -> None:
    """Family, width, depth and registers must match; if not, name the backbones the file fits."""
    found = weights.architecture()
    if found == (spec.family, spec.embed_dim, spec.depth, spec.num_registers):
        return
    fits = [s.name for s in BACKBONES.values() if (s.family, s.embed_dim, s.depth, s.num_registers) == found]
    advice = f"use {' or '.join(fits)}" if fits else "no known backbone has that shape"
    raise UserError(
        f"{weights.source} does not fit backbone {spec.name}: the file holds {weights.describe()}, "
        f"{spec.name} has embed_dim {spec.embed_dim}, {spec.depth} blocks, {spec.num_registers} "
        f"registers; {advice}"
    )


def timm_state_dict(vit: ViT, spec: BackboneSpec, weights: OfficialWeights) -> dict[str, torch.Tensor]:
    """Official-format tensors under timm's names (timm's own filters), checked to fit `vit` exactly."""
    _check_architecture(spec, weights)
    if isinstance(vit, vision_transformer.VisionTransformer):  # the DINOv2 family
        state = vision_transformer.checkpoint_filter_fn(dict(weights.state_dict), vit)
    else:
        state = eva.checkpoint_filter_fn(dict(weights.state_dict), vit)
    expected = vit.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("wrong shapes", wrong_shape), ("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise UserError(
            f"{weights.source} does not fit backbone {spec.name} ({weights.describe()}): " + "; ".join(problems)
        )
    return state


def build_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    layers: int | Sequence[int] | None = None,
    frozen: bool = True,
) -> Backbone:
    """The backbone `name` with `weights` (file, Hugging Face folder, "hub", or None for random).

    `layers`: None for the last block, an int n for n evenly spaced blocks (`default_layers`), or
    explicit block indices (negative ones count from the end).
    """
    return build_from_spec(get_spec(name), weights, layers, frozen)


def build_from_spec(
    spec: BackboneSpec,
    weights: str | os.PathLike[str] | None = None,
    layers: int | Sequence[int] | None = None,
    frozen: bool = True,
) -> Backbone:
    """`build_backbone` for a spec that need not be registered (tests shrink real specs with it)."""
    vit = _create_vit(spec)
    periods = rope_periods(spec.embed_dim // spec.num_heads) if spec.family == "dinov3" else None
    if weights:
        official = read_weights(weights, hf_repo=spec.hf_repo)
        vit.load_state_dict(timm_state_dict(vit, spec, official), strict=True)
        weights_hash = official.sha256
        if official.rope_periods is not None:
            periods = official.rope_periods
    else:
        weights_hash = "random"
        warnings.warn(
            f"backbone {spec.name} has RANDOM weights: its features mean nothing; pass --weights or set "
            f"DINO_WEIGHTS to an official checkpoint file or a Hugging Face model folder",
            RandomBackboneWarning,
            stacklevel=3,
        )
    backbone = Backbone(spec, vit, _resolve_layers(layers, len(vit.blocks)), weights_hash, periods)
    return backbone.freeze() if frozen else backbone
