"""A backbone and a head as one model: images in, class logits at the image's resolution out.

The pieces are exposed separately (`forward_features`, `head_logits`; with trained backbone blocks
`frozen_features` and `features_from_frozen`) so that training on cached features runs the same
backbone blocks, head code and upsampling as inference on images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.heads.base import IGNORE_INDEX, SegHead, upsample_to

if TYPE_CHECKING:  # the type only: any module with Backbone's attributes works (tests pass small fakes)
    from models.backbones import Backbone


class Segmenter(nn.Module):
    """`backbone` follows `models.backbones.Backbone` (patch_size, mean, std; images -> list of maps)."""

    mean: Tensor  # buffers registered in __init__
    std: Tensor

    def __init__(self, backbone: Backbone, head: SegHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_size = int(backbone.patch_size)
        self.register_buffer(
            "mean", torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> Segmenter:
        """A frozen backbone stays in eval mode, so its features never depend on the batch."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [0,255] or float [0,1] images [B,3,H,W] to the backbone's normalised input."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.mean) / self.std

    def pad(self, x: Tensor, value: float = 0.0) -> Tensor:
        """Pad right and bottom to a multiple of the patch (0 after normalisation is the mean colour)."""
        h, w = x.shape[-2:]
        p = self.patch_size
        return F.pad(x, (0, -w % p, 0, -h % p), value=value)

    def forward_features(self, images: Tensor) -> list[Tensor]:
        """The backbone's maps for images [B,3,H,W]; no autograd graph when the backbone is frozen."""
        x = self.pad(self.normalize(images))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(x)

    def frozen_features(self, images: Tensor) -> list[Tensor]:
        """The backbone's frozen part for images [B,3,H,W] (`Backbone.frozen_features`), never with a graph:
        what train's feature cache stores. Equal to `forward_features` when the whole backbone is frozen."""
        with torch.no_grad():
            return self.backbone.frozen_features(self.pad(self.normalize(images)))

    def features_from_frozen(self, frozen: Sequence[Tensor], image_size: Sequence[int]) -> list[Tensor]:
        """The maps the head reads, from `frozen_features` of images of `image_size` (H, W): the trained blocks run here."""
        grid = (-(-int(image_size[0]) // self.patch_size), -(-int(image_size[1]) // self.patch_size))
        return self.backbone.features_from_frozen(frozen, grid)

    def head_logits(self, features: Sequence[Tensor], image_size: Sequence[int]) -> Tensor:
        """The head's logits resized to the padded input and cropped back to `image_size` (H, W)."""
        logits = self.head(list(features))
        h, w = features[0].shape[-2:]
        padded = upsample_to(logits, (h * self.patch_size, w * self.patch_size))
        return padded[..., : image_size[0], : image_size[1]]

    def forward(self, images: Tensor) -> Tensor:
        """Logits [B,K,H,W] for images [B,3,H,W] (uint8 or float in [0,1])."""
        return self.head_logits(self.forward_features(images), images.shape[-2:])

    def loss(self, images: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The head's losses; the target is padded with the ignore index exactly like the image."""
        return self.head.loss(self.forward_features(images), self.pad(target, IGNORE_INDEX))
