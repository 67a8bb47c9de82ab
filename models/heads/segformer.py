"""`segformer`: SegFormer's all-MLP decoder over the multi-layer ViT maps.

Each layer is projected to a common width, the projections are concatenated and fused by one
more 1x1 layer, then classified per patch: cheap, and the CRIOBE anchor's best model.

Projection and fuse are both linear with nothing between them, so they are computed as one matrix
per input layer (the fuse's slice for that layer times the layer's projection), applied at the layer's
own resolution before any upsampling (a linear map commutes with bilinear interpolation): the same
function and the same gradients as projecting, concatenating and fusing, with less arithmetic and
no concatenated map (benchmarks/README.md). The parameters, and so the checkpoints, are the former ones.
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
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

    def fused_projections(self, features: list[Tensor]) -> Tensor:
        """The fuse convolution of the concatenated projections, [B,channels,h,w] at the first map's size."""
        size = features[0].shape[-2:]
        fuse = cast(nn.Conv2d, self.fuse[0]).weight.flatten(1)  # [channels, channels * num_inputs]; no bias
        total: Tensor | None = None
        for i, (part, f) in enumerate(zip(fuse.chunk(len(features), dim=1), features)):
            projection = cast(nn.Conv2d, self.projections[i])
            weight, bias = part @ projection.weight.flatten(1), part @ cast(Tensor, projection.bias)
            # [B,h,w,C] tokens times the combined matrix: a matrix product, faster than a 1x1 convolution on CPUs
            fused = upsample_to(F.linear(f.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2), size)
            total = fused if total is None else total + fused
        assert total is not None
        return total

    def forward(self, features: list[Tensor]) -> Tensor:
        self.check_features(features)
        fused = self.fused_projections(features)
        return self.classifier(self.dropout(self.fuse[2](self.fuse[1](fused))))
