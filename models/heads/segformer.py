"""`segformer`: SegFormer's all-MLP decoder over the multi-layer ViT maps.

Each layer is projected to a common width, the projections are concatenated and fused by one
more 1x1 layer, then classified per patch: cheap, and the CRIOBE anchor's best model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.heads.base import SegHead, upsample_to
from models.heads.blocks import conv_norm_act


class SegFormerHead(SegHead):
    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
        **loss_options,
    ) -> None:
        super().__init__(in_channels, num_inputs, num_classes, **loss_options)
        self.projections = nn.ModuleList(nn.Conv2d(in_channels, channels, 1) for _ in range(num_inputs))
        self.fuse = conv_norm_act(channels * num_inputs, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        self.check_features(features)
        size = features[0].shape[-2:]
        x = torch.cat([upsample_to(p(f), size) for p, f in zip(self.projections, features)], dim=1)
        return self.classifier(self.dropout(self.fuse(x)))
