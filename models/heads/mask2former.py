"""`mask2former`: learned queries that each predict a class and a mask, decoded with masked attention.

Pixel decoder: an FPN over a pyramid made from the ViT layers (Mask2Former's FPN variant; the
deformable-attention encoder is left out). Transformer decoder: each layer lets the queries
attend, round-robin over the three coarsest levels, only to pixels inside their current mask
prediction, then to each other. Training (Hungarian matching; class, mask and dice losses over
every layer) and semantic inference are those of every mask-classification head
(models/heads/mask_classification.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.heads.base import upsample_to
from models.heads.blocks import ViTPyramid, conv_norm_act, sine_positions
from models.heads.mask_classification import MaskClassificationHead


class DecoderLayer(nn.Module):
    """Masked cross-attention to one pixel level, self-attention among queries, feed-forward."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(
        self, queries: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, blocked: Tensor
    ) -> Tensor:
        mask = blocked.repeat_interleave(self.num_heads, dim=0)
        attended = self.cross_attn(
            queries + query_pos, memory + memory_pos, memory, attn_mask=mask, need_weights=False
        )[0]
        queries = self.norms[0](queries + attended)
        q = queries + query_pos
        queries = self.norms[1](queries + self.self_attn(q, q, queries, need_weights=False)[0])
        return self.norms[2](queries + self.ffn(queries))


class Mask2FormerHead(MaskClassificationHead):
    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_layers: int = 6,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        scales: Sequence[float] = (4, 2, 1, 0.5),
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
        if len(scales) < 2:
            raise ValueError(
                "mask2former needs at least two pyramid scales: the finest for masks, the others for attention"
            )
        self.output_scale = int(max(scales))
        # Pixel decoder: FPN from the coarsest level down to the finest, which carries the masks.
        self.pyramid = ViTPyramid(in_channels, num_inputs, hidden_dim, scales)
        self.laterals = nn.ModuleList(conv_norm_act(hidden_dim, hidden_dim) for _ in scales[:-1])
        self.fpn_convs = nn.ModuleList(conv_norm_act(hidden_dim, hidden_dim, 3) for _ in scales[:-1])
        self.mask_features = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.num_levels = min(3, len(scales) - 1)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        # Transformer decoder.
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(DecoderLayer(hidden_dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)  # the last class is "no object"
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
        )

    def pixel_decoder(self, features: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Attention memory (coarse to fine levels) and the per-pixel mask embedding."""
        levels = self.pyramid(features)  # finest first
        y = levels[-1]
        outs = [y]
        for i in range(len(levels) - 2, -1, -1):
            y = self.fpn_convs[i](self.laterals[i](levels[i]) + upsample_to(y, levels[i].shape[-2:]))
            outs.append(y)
        return outs[: self.num_levels], self.mask_features(outs[-1])

    def _predict(
        self, queries: Tensor, mask_features: Tensor, attention_size: Sequence[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = self.decoder_norm(queries)
        class_logits = self.class_embed(x)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features)
        with torch.no_grad():
            blocked = upsample_to(mask_logits, attention_size).flatten(2) < 0  # sigmoid < 0.5
            blocked[blocked.all(dim=-1)] = False  # a query with an empty mask looks everywhere
        return class_logits, mask_logits, blocked

    def decode(self, features: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """(class logits [B,Q,K+1], mask logits [B,Q,h,w]) after each decoder stage, the last one best."""
        self.check_features(features)
        memory, mask_features = self.pixel_decoder(features)
        batch = mask_features.shape[0]
        sizes = [m.shape[-2:] for m in memory]
        positions = [
            sine_positions(h, w, self.level_embed.embedding_dim, m.device).to(m.dtype)
            for (h, w), m in zip(sizes, memory)
        ]
        memory = [m.flatten(2).transpose(1, 2) + self.level_embed.weight[i] for i, m in enumerate(memory)]
        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(batch, -1, -1)
        class_logits, mask_logits, blocked = self._predict(queries, mask_features, sizes[0])
        outputs = [(class_logits, mask_logits)]
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            queries = layer(queries, query_pos, memory[level], positions[level], blocked)
            class_logits, mask_logits, blocked = self._predict(queries, mask_features, sizes[(i + 1) % self.num_levels])
            outputs.append((class_logits, mask_logits))
        return outputs
