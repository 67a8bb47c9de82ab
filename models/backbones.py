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


TRAIN_ALL = "all"  # `train_blocks` value that fine-tunes the whole backbone, patch embedding and final norm included
# Where a backbone's trained weights sit in a checkpoint's tensors (the head's own names never start with it).
CHECKPOINT_PREFIX = "backbone."


class Backbone(nn.Module):
    """A DINO ViT returning one feature map per selected block, at 1/patch resolution.

    `forward(x: [B,3,H,W])` -> list of [B, embed_dim, ceil(H/p), ceil(W/p)], in increasing block
    order, each passed through the final norm (as the official `get_intermediate_layers(norm=True)`).
    Images whose sides are not multiples of the patch are zero-padded on the bottom and right.

    Partial fine-tuning (`set_trainable(n)`) trains the last `n` blocks; the forward pass is then
    two parts, `frozen_features` (the maps of tapped frozen blocks, then the tokens entering the first
    trained block: what train's feature cache stores) and `features_from_frozen` (the trained blocks,
    run on them), and `forward` is exactly the two in sequence.
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
        self.train_blocks: int | str = 0  # how many last blocks train (or TRAIN_ALL); 0: frozen
        self.lora_rank = 0
        if periods is not None:
            self.register_buffer("rope_periods", periods.float(), persistent=False)

    @property
    def first_trained(self) -> int:
        """Index of the first trained block (`num_layers` when every block is frozen)."""
        if self.train_blocks == TRAIN_ALL:
            return 0
        return self.num_layers - int(self.train_blocks)

    @property
    def trains_embedding(self) -> bool:
        return self.train_blocks == TRAIN_ALL

    def freeze(self) -> Backbone:
        """No gradients and eval mode, kept even when a parent module calls `.train()`."""
        self.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def set_trainable(self, train_blocks: int | str, lora_rank: int = 0) -> Backbone:
        """Train the last `train_blocks` blocks (TRAIN_ALL: everything), or only LoRA adapters on their linear layers.

        The final norm is shared by every tapped block, frozen ones included, so it trains only with
        TRAIN_ALL: the cached maps of frozen blocks then stay valid (and shared with frozen runs).
        With `lora_rank` > 0 the trained blocks' attention `qkv` and `proj` layers get LoRA adapters
        (peft, alpha = rank, no dropout) and only the adapters train.
        """
        depth = self.num_layers
        if train_blocks != TRAIN_ALL and not (isinstance(train_blocks, int) and 0 <= train_blocks <= depth):
            raise UserError(
                f"train_blocks must be 0 to {depth} (the blocks of {self.name}) or 'all', got {train_blocks!r}"
            )
        if lora_rank < 0:
            raise UserError(f"lora_rank must be 0 (off) or more, got {lora_rank}")
        self.freeze()
        self.train_blocks = train_blocks
        if train_blocks == 0:
            if lora_rank:
                raise UserError("lora_rank puts LoRA adapters on the trained blocks; set train_blocks too")
            return self
        if train_blocks != TRAIN_ALL and self.layers[-1] < self.first_trained:
            raise UserError(
                f"train_blocks {train_blocks} trains blocks {self.first_trained}-{depth - 1} of {self.name} but the head "
                f"reads blocks {self.layers} only; tap the last block (--layers) or lower train_blocks"
            )
        self.frozen = False
        if lora_rank:
            if train_blocks == TRAIN_ALL:
                raise UserError(
                    f"LoRA adapts blocks, not the patch embedding: use train_blocks {depth} (every block) with lora_rank"
                )
            self._add_lora(lora_rank)
        elif train_blocks == TRAIN_ALL:
            self.requires_grad_(True)
        else:
            self.vit.blocks[self.first_trained :].requires_grad_(True)
        return self.train(self.training)

    def _add_lora(self, rank: int) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        blocks = range(self.first_trained, self.num_layers)
        targets = [f"blocks.{i}.attn.{name}" for i in blocks for name in ("qkv", "proj")]
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets), self.vit)
        for i in blocks:
            attn = self.vit.blocks[i].attn
            if hasattr(attn, "qkv_bias_separate"):  # timm's Eva reads qkv.weight directly unless the bias is separate
                attn.qkv_bias_separate = True
        for name, parameter in self.vit.named_parameters():  # only the adapters train
            parameter.requires_grad_("lora_" in name)
        self.lora_rank = rank

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)

    def trained_prefixes(self) -> tuple[str, ...]:
        """The `vit` state-dict prefixes of the trained part (empty when frozen)."""
        if self.train_blocks == TRAIN_ALL:
            return ("",)
        return tuple(f"blocks.{i}." for i in range(self.first_trained, self.num_layers))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained part's tensors as they train (LoRA adapters unmerged): what a resumable state holds."""
        prefixes = self.trained_prefixes()
        if not prefixes:
            return {}
        return {k: v for k, v in self.vit.state_dict().items() if k.startswith(prefixes)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """`trainable_state()` back in place, every key of it required."""
        expected = set(self.trainable_state())
        if set(state) != expected:
            raise UserError(
                f"the saved backbone state does not fit {self.name} with train_blocks {self.train_blocks} and "
                f"lora_rank {self.lora_rank}; resume with the settings the run started with"
            )
        self.vit.load_state_dict(state, strict=False)

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The trained part as plain timm weights (LoRA merged in): what a checkpoint holds."""
        state = self.trainable_state()
        if not self.lora_rank:
            return {k: v.detach() for k, v in state.items()}
        from peft.tuners.lora import Linear as LoraLinear

        merged = {k: v.detach() for k, v in state.items() if "lora_" not in k and ".base_layer." not in k}
        for name, module in self.vit.named_modules():
            if isinstance(module, LoraLinear):
                base = module.get_base_layer()
                if not isinstance(base, nn.Linear):
                    raise TypeError(f"LoRA on {name} wraps a {type(base).__name__}, not a Linear layer")
                merged[f"{name}.weight"] = (base.weight + module.get_delta_weight("default")).detach()
                if base.bias is not None:
                    merged[f"{name}.bias"] = base.bias.detach()
        return merged

    def load_trained_weights(self, tensors: dict[str, torch.Tensor], train_blocks: int | str) -> None:
        """A checkpoint's trained blocks (`trained_weights`) over the frozen rest; every trained tensor required.

        The backbone stays frozen (inference); call `set_trainable` to train further."""
        self.train_blocks = train_blocks  # kept: it says where the frozen part ends (the features do not depend on it)
        expected = set(self.trainable_state())
        if set(tensors) != expected:
            missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise UserError(
                f"the checkpoint's backbone tensors do not fit {self.name} with train_blocks {train_blocks} "
                f"(missing: {', '.join(missing[:4]) or 'none'}; unexpected: {', '.join(unexpected[:4]) or 'none'})"
            )
        self.vit.load_state_dict(tensors, strict=False)

    def frozen_names(self) -> list[str]:
        """Names of the tensors `frozen_features` returns, as train's feature cache files them."""
        names = [f"layer_{i}" for i in self.layers if i < self.first_trained]
        return names + ([f"tokens_{self.first_trained}"] if self.train_blocks else [])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        rows, cols = (math.ceil(side / self.patch_size) for side in images.shape[-2:])
        return self.features_from_frozen(self.frozen_features(images), (rows, cols))

    def frozen_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen part: maps [B,C,h,w] of the tapped frozen blocks, then (when blocks train) the tokens
        [B, 1 + registers + h*w, C] entering the first trained block."""
        tokens, rows, cols = self._embed(images)
        maps, tokens = self._run_blocks(tokens, 0, min(self.first_trained, self.layers[-1] + 1), rows, cols)
        return maps + ([tokens] if self.train_blocks else [])

    def features_from_frozen(self, frozen: Sequence[torch.Tensor], grid: tuple[int, int]) -> list[torch.Tensor]:
        """Every tapped map, from `frozen_features`' output on images of `grid` (rows, cols) patches."""
        if not self.train_blocks:
            return list(frozen)
        *maps, tokens = frozen
        trained, _ = self._run_blocks(tokens, self.first_trained, self.layers[-1] + 1, *grid)
        return [*maps, *trained]

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        p = self.patch_size
        height, width = images.shape[-2:]
        rows, cols = math.ceil(height / p), math.ceil(width / p)
        if (rows * p, cols * p) != (height, width):
            images = F.pad(images, (0, cols * p - width, 0, rows * p - height))
        patches = self.vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        if self.spec.family == "dinov2":
            return self._dinov2_tokens(patches, rows, cols), rows, cols
        return self._dinov3_tokens(patches), rows, cols

    def _run_blocks(
        self, tokens: torch.Tensor, start: int, stop: int, rows: int, cols: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Blocks `start` to `stop - 1` on `tokens`: the normed maps of the tapped ones, and the tokens after."""
        block_kwargs = {}
        if self.spec.family == "dinov3":
            block_kwargs = {"rope": torch.cat(rope_sin_cos(self.rope_periods, rows, cols), -1)}
        prefix = 1 + self.spec.num_registers
        maps = []
        for index in range(start, stop):
            tokens = self.vit.blocks[index](tokens, **block_kwargs)
            if index in self.layers:
                features = self.vit.norm(tokens[:, prefix:])
                maps.append(features.transpose(1, 2).reshape(len(tokens), -1, rows, cols))
        return maps, tokens

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
