"""`linear`: BatchNorm + 1x1 convolution on the backbone's maps, DINOv3's linear segmentation protocol.

With several inputs the maps are concatenated along channels (DINOv2's multi-layer "+ms" linear).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.heads.base import SegHead


class LinearHead(SegHead):
    def __init__(
        self, in_channels: int, num_inputs: int, num_classes: int, dropout: float = 0.1, **loss_options
    ) -> None:
        super().__init__(in_channels, num_inputs, num_classes, **loss_options)
        self.norm = nn.BatchNorm2d(in_channels * num_inputs)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels * num_inputs, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        self.check_features(features)
        x = torch.cat(list(features), dim=1)
        return self.classifier(self.dropout(self.norm(x)))
