"""`upernet`: UperNet (pyramid pooling + feature pyramid network) on a pyramid made from the ViT layers.

The ViT maps are resampled to 4x, 2x, 1x and 0.5x of the patch grid (BEiT's recipe); a pyramid
pooling module summarises the coarsest level, the FPN carries it down to the finest, and all
levels are fused there, so logits come out at 4x the feature resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.heads.base import SegHead, upsample_to
from models.heads.blocks import ViTPyramid, conv_norm_act


class UperNetHead(SegHead):
    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        channels: int = 128,
        scales: Sequence[float] = (4, 2, 1, 0.5),
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        **loss_options,
    ) -> None:
        super().__init__(in_channels, num_inputs, num_classes, **loss_options)
        self.output_scale = int(max(scales))
        self.pyramid = ViTPyramid(in_channels, num_inputs, channels, scales)
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_norm_act(channels, channels)) for s in pool_scales
        )
        self.ppm_bottleneck = conv_norm_act(channels * (len(pool_scales) + 1), channels, 3)
        self.laterals = nn.ModuleList(conv_norm_act(channels, channels) for _ in scales[:-1])
        self.fpn_convs = nn.ModuleList(conv_norm_act(channels, channels, 3) for _ in scales[:-1])
        self.fuse = conv_norm_act(channels * len(scales), channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        self.check_features(features)
        levels = self.pyramid(features)  # finest first
        top = levels[-1]
        pooled = [upsample_to(pool(top), top.shape[-2:]) for pool in self.ppm]
        outs = [lateral(level) for lateral, level in zip(self.laterals, levels[:-1])]
        outs.append(self.ppm_bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(outs) - 1, 0, -1):
            outs[i - 1] = outs[i - 1] + upsample_to(outs[i], outs[i - 1].shape[-2:])
        outs = [conv(o) for conv, o in zip(self.fpn_convs, outs[:-1])] + [outs[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([upsample_to(o, size) for o in outs], dim=1))
        return self.classifier(self.dropout(fused))
