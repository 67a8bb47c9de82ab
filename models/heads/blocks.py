"""Building blocks shared by several heads: conv + norm + activation, a feature pyramid from ViT maps, sine positions.

A plain ViT gives maps at one resolution; pyramid heads (UperNet, Mask2Former) need several, so
they are made by up/down-sampling the layers, as in BEiT/ViTDet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm, which unlike BatchNorm behaves the same for a batch of 1 and across GPUs.

    At least two channels per group, so a 1x1 map (pyramid pooling) still has something to normalise.
    """
    return nn.GroupNorm(math.gcd(32, max(channels // 2, 1)), channels)


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


def _resampler(in_channels: int, channels: int, scale: float) -> nn.Sequential:
    steps = math.log2(scale)
    if steps != round(steps):
        raise ValueError(f"pyramid scales must be powers of two, got {scale}")
    steps = int(round(steps))
    if steps > 0:
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_channels, channels, 2, stride=2)]
        for _ in range(steps - 1):
            layers += [group_norm(channels), nn.GELU(), nn.ConvTranspose2d(channels, channels, 2, stride=2)]
    else:
        layers = [nn.MaxPool2d(2**-steps, ceil_mode=True)] if steps < 0 else []
        layers.append(nn.Conv2d(in_channels, channels, 1))
    return nn.Sequential(*layers, group_norm(channels))


class ViTPyramid(nn.Module):
    """One map per scale (e.g. 4x, 2x, 1x, 0.5x of the ViT grid), each from one of the input layers.

    With as many inputs as scales, level i uses input i (shallow layers feed fine levels); with
    fewer inputs, levels share them evenly (one input: ViTDet's simple pyramid from the last layer).
    """

    def __init__(
        self, in_channels: int, num_inputs: int, channels: int, scales: Sequence[float] = (4, 2, 1, 0.5)
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        last = len(self.scales) - 1
        self.sources = [round(i * (num_inputs - 1) / last) if last else num_inputs - 1 for i in range(len(self.scales))]
        self.levels = nn.ModuleList(_resampler(in_channels, channels, s) for s in self.scales)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [level(features[src]) for level, src in zip(self.levels, self.sources)]


def sine_positions(height: int, width: int, dim: int, device: torch.device) -> Tensor:
    """DETR's 2-D sine position encoding, [height*width, dim]."""
    per_axis = dim // 2
    freqs = 10000 ** (2 * (torch.arange(per_axis, device=device) // 2) / per_axis)

    def encode(n: int) -> Tensor:
        angles = ((torch.arange(n, device=device) + 0.5) / n * 2 * torch.pi)[:, None] / freqs
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    y, x = encode(height), encode(width)
    return torch.cat([y[:, None].expand(-1, width, -1), x[None].expand(height, -1, -1)], dim=2).flatten(0, 1)
