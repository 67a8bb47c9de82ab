"""`pmt`: a plain Transformer mask decoder that runs learned queries together with the frozen patch tokens.

After the Plain Mask Decoder of PMT (Cavagnero et al., CVPR 2026 W), which imitates on a frozen
backbone what EoMT's last ViT blocks do when fine-tuned: the patch tokens and `num_queries` learned
queries go through `num_layers` plain pre-norm Transformer blocks as one sequence, with joint
self-attention over [queries; patch tokens], so queries gather evidence from the patches and the
patches are refined by the queries. The patch tokens start from the projection of a shallow
backbone layer and each block adds the projection of the next one (lateral connections, shallow to
deep), with a sine position code. Then every query predicts a class and a mask: the dot product of
its embedding with the patch tokens upsampled `mask_scale` times (transposed convolutions).
In training every earlier block predicts too, its masks at patch resolution (deep supervision, as
EoMT and Mask2Former train): without it pmt learned the demo data more slowly than the linear head
(benchmarks/README.md); inference uses only the last block's prediction.
No pixel decoder, no pyramid, no masked cross-attention: cheaper than mask2former for the same
mask-classification losses and semantic read-out (models/heads/mask_classification.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.heads.blocks import group_norm, sine_positions
from models.heads.mask_classification import MaskClassificationHead


class PMTHead(MaskClassificationHead):
    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 50,
        num_layers: int = 4,
        num_heads: int = 8,
        ffn_ratio: float = 4.0,
        mask_scale: int = 4,
        dropout: float = 0.0,
        loss_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
        class_loss_weight: float = 2.0,
        mask_loss_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        class_weights: Sequence[float] | None = None,
        loss_scale: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels,
            num_inputs,
            num_classes,
            loss_points=loss_points,
            oversample_ratio=oversample_ratio,
            importance_ratio=importance_ratio,
            class_loss_weight=class_loss_weight,
            mask_loss_weight=mask_loss_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            class_weights=class_weights,
            loss_scale=loss_scale,
        )
        if hidden_dim % 4 or hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a multiple of 4 and of num_heads ({num_heads})")
        if num_layers < 1 or num_queries < 1:
            raise ValueError(
                f"pmt needs at least one layer and one query, got num_layers={num_layers}, num_queries={num_queries}"
            )
        steps = math.log2(mask_scale) if mask_scale >= 1 else -1.0
        if steps != round(steps) or steps < 0:
            raise ValueError(f"mask_scale must be 1, 2, 4, 8 ..., got {mask_scale}")
        self.output_scale = mask_scale
        # Block i adds the projection of backbone map sources[i]: the first block starts from the shallowest, the last adds the deepest.
        self.sources = [
            round(i * (num_inputs - 1) / (num_layers - 1)) if num_layers > 1 else num_inputs - 1
            for i in range(num_layers)
        ]
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(in_channels), nn.Linear(in_channels, hidden_dim)) for _ in range(num_layers)
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                hidden_dim,
                num_heads,
                int(hidden_dim * ffn_ratio),
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)  # the last class is "no object"
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
        )
        upscale: list[nn.Module] = []
        for _ in range(int(steps)):
            upscale += [nn.ConvTranspose2d(hidden_dim, hidden_dim, 2, stride=2), group_norm(hidden_dim), nn.GELU()]
        self.upscale = nn.Sequential(*upscale, nn.Conv2d(hidden_dim, hidden_dim, 1))

    def decode(self, features: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        self.check_features(features)
        batch, _, height, width = features[0].shape
        num_queries = self.query_embed.num_embeddings
        queries = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        positions = sine_positions(height, width, queries.shape[-1], queries.device).to(queries.dtype)
        tokens = positions.unsqueeze(0).expand(batch, -1, -1)
        x = None
        outputs = []
        for i, (lateral, block, source) in enumerate(zip(self.laterals, self.blocks, self.sources)):
            patches = lateral(features[source].flatten(2).transpose(1, 2))
            x = (
                torch.cat([queries, tokens + patches], dim=1)
                if x is None
                else x + torch.cat([torch.zeros_like(queries), patches], dim=1)
            )
            x = block(x)
            if self.training and i < len(self.blocks) - 1:  # deep supervision, masks at patch resolution
                y = self.norm(x)
                pixels = y[:, num_queries:].transpose(1, 2).reshape(batch, -1, height, width)
                outputs.append(self._predict(y[:, :num_queries], pixels))
        assert x is not None
        x = self.norm(x)
        pixels = self.upscale(x[:, num_queries:].transpose(1, 2).reshape(batch, -1, height, width))
        return [*outputs, self._predict(x[:, :num_queries], pixels)]

    def _predict(self, queries: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits [B,Q,K+1] and mask logits [B,Q,h,w] from the queries and a pixel map [B,C,h,w]."""
        return self.class_embed(queries), torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), pixels)
