"""Position encodings computed exactly as the official DINOv2 and DINOv3 code computes them.

timm resamples DINOv2's learned 37x37 position grid its own way (by target size, with antialiasing),
which changes the features at every input size but the native 518 px. The official rules differ by
model family, so they live here, once, and the backbone calls them:

- DINOv2 original models: bicubic by *scale factor* `(n + 0.1) / 37`, no antialiasing.
- DINOv2 register models: bicubic by *target size*, with antialiasing, no offset.
- DINOv3: no learned grid; rotary encoding (RoPE) of patch-centre coordinates in [-1, 1], each
  axis normalized by its own length ("separate"), with the per-frequency periods stored in the
  checkpoint (the released files hold them rounded to bfloat16, so they are read, not recomputed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PosEmbedRule:
    """How a DINOv2 model resamples its learned position grid to another number of patches."""

    offset: float  # added to the target patch count before computing the scale factor (0: use the size)
    antialias: bool


DINOV2_RULE = PosEmbedRule(offset=0.1, antialias=False)
DINOV2_REG_RULE = PosEmbedRule(offset=0.0, antialias=True)


def resample_pos_grid(patch_pos: torch.Tensor, rows: int, cols: int, rule: PosEmbedRule) -> torch.Tensor:
    """The learned position embeddings of a square grid, (1, M*M, C), resampled to (1, rows*cols, C).

    Mirrors `DinoVisionTransformer.interpolate_pos_encoding`: computed in float32, unchanged when the
    grid already has the requested shape.
    """
    _, count, dim = patch_pos.shape
    side = int(math.sqrt(count))
    if side * side != count:
        raise ValueError(f"position grid of {count} entries is not square")
    if (rows, cols) == (side, side):
        return patch_pos
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if rule.offset:
        scale = [float(rows + rule.offset) / side, float(cols + rule.offset) / side]
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=rule.antialias)
    else:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=rule.antialias)
    if grid.shape[-2:] != (rows, cols):
        raise ValueError(f"position grid resampled to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(patch_pos.dtype)


def rope_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """DINOv3's RoPE periods for a fresh model, `base ** (2 i / (head_dim / 2))`, float32."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def rope_sin_cos(periods: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3's rotary (sin, cos), each (rows*cols, head_dim), for a rows x cols patch grid at eval time.

    Same operations, order and dtype (float32) as the official `RopePositionEmbedding.forward` with
    `normalize_coords="separate"`; the training-time coordinate augmentations do not apply to features.
    """
    coords_h = torch.arange(0.5, rows, device=periods.device, dtype=torch.float32) / rows
    coords_w = torch.arange(0.5, cols, device=periods.device, dtype=torch.float32) / cols
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] / periods.float()[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)
