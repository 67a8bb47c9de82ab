"""`mask2former`: learned queries that each predict a class and a mask, decoded with masked attention.

Pixel decoder: an FPN over a pyramid made from the ViT layers (Mask2Former's FPN variant; the
deformable-attention encoder is left out). Transformer decoder: each layer lets the queries
attend, round-robin over the three coarsest levels, only to pixels inside their current mask
prediction, then to each other. Training matches queries to the classes present in each image
(Hungarian, on sampled points), then sums class, mask (BCE) and dice losses over every layer.
Semantic inference: per class, the sum over queries of P(class) x mask probability; returned as
its logarithm so that a softmax over it gives a class distribution, like any head's logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from models.heads.base import IGNORE_INDEX, SegHead, upsample_to
from models.heads.blocks import ViTPyramid, conv_norm_act
from models.heads.points import importance_points, point_sample, scaled_target


def sine_positions(height: int, width: int, dim: int, device: torch.device) -> Tensor:
    """DETR's 2-D sine position encoding, [height*width, dim]."""
    per_axis = dim // 2
    freqs = 10000 ** (2 * (torch.arange(per_axis, device=device) // 2) / per_axis)

    def encode(n: int) -> Tensor:
        angles = ((torch.arange(n, device=device) + 0.5) / n * 2 * torch.pi)[:, None] / freqs
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    y, x = encode(height), encode(width)
    return torch.cat([y[:, None].expand(-1, width, -1), x[None].expand(height, -1, -1)], dim=2).flatten(0, 1)


class DecoderLayer(nn.Module):
    """Masked cross-attention to one pixel level, self-attention among queries, feed-forward."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, queries: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, blocked: Tensor) -> Tensor:
        mask = blocked.repeat_interleave(self.num_heads, dim=0)
        attended = self.cross_attn(queries + query_pos, memory + memory_pos, memory, attn_mask=mask, need_weights=False)[0]
        queries = self.norms[0](queries + attended)
        q = queries + query_pos
        queries = self.norms[1](queries + self.self_attn(q, q, queries, need_weights=False)[0])
        return self.norms[2](queries + self.ffn(queries))


class Mask2FormerHead(SegHead):
    classifier_prefixes = ("class_embed.",)
    empty_weight: Tensor  # a buffer registered in __init__

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
        super().__init__(in_channels, num_inputs, num_classes, class_weights=class_weights, dice_weight=dice_weight, loss_points=loss_points,
                         loss_scale=loss_scale, oversample_ratio=oversample_ratio, importance_ratio=importance_ratio)
        if hidden_dim % 4 or hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be a multiple of 4 and of num_heads ({num_heads})")
        if len(scales) < 2:
            raise ValueError("mask2former needs at least two pyramid scales: the finest for masks, the others for attention")
        self.output_scale = int(max(scales))
        self.class_loss_weight, self.mask_loss_weight = class_loss_weight, mask_loss_weight
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
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
        )
        empty = torch.ones(num_classes + 1)
        if self.class_weights is not None:
            empty[:-1] = self.class_weights
        empty[-1] = no_object_weight
        self.register_buffer("empty_weight", empty, persistent=False)

    def pixel_decoder(self, features: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Attention memory (coarse to fine levels) and the per-pixel mask embedding."""
        levels = self.pyramid(features)  # finest first
        y = levels[-1]
        outs = [y]
        for i in range(len(levels) - 2, -1, -1):
            y = self.fpn_convs[i](self.laterals[i](levels[i]) + upsample_to(y, levels[i].shape[-2:]))
            outs.append(y)
        return outs[: self.num_levels], self.mask_features(outs[-1])

    def _predict(self, queries: Tensor, mask_features: Tensor, attention_size: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
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
        positions = [sine_positions(h, w, self.level_embed.embedding_dim, m.device).to(m.dtype) for (h, w), m in zip(sizes, memory)]
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

    def forward(self, features: list[Tensor]) -> Tensor:
        class_logits, mask_logits = self.decode(features)[-1]
        probs = class_logits.float().softmax(dim=-1)[..., :-1]
        scores = torch.einsum("bqk,bqhw->bkhw", probs, mask_logits.float().sigmoid())
        return scores.clamp_min(1e-6).log()

    def loss(self, features: list[Tensor], target: Tensor) -> dict[str, Tensor]:
        """Class + mask + dice losses of every decoder stage, after Hungarian matching per image."""
        outputs = self.decode(features)
        if not self.loss_points and self.loss_scale < 1:
            target = scaled_target(target, self.loss_scale)
        valid = (target != IGNORE_INDEX).float()
        labels, masks = [], []
        for t in target:
            present = t.unique()
            present = present[present != IGNORE_INDEX]
            labels.append(present)
            masks.append((t[None] == present[:, None, None]).float())
        num_masks = max(sum(len(x) for x in labels), 1)
        total = target.new_zeros((), dtype=torch.float32)
        for class_logits, mask_logits in outputs:
            class_logits, mask_logits = class_logits.float(), mask_logits.float()
            matches = [self._match(c, m, lab, tm, v) for c, m, lab, tm, v in zip(class_logits, mask_logits, labels, masks, valid)]
            parts = self._losses(class_logits, mask_logits, labels, masks, valid, matches, num_masks)
            total = total + self.class_loss_weight * parts["class"] + self.mask_loss_weight * parts["mask"] + self.dice_weight * parts["dice"]
        return {"loss": total, **parts}

    @torch.no_grad()
    def _match(self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(query indices, target indices) minimising class + mask + dice cost, on shared random points."""
        if len(labels) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        n = self.loss_points or valid.numel()
        coords = torch.rand(1, n, 2, device=mask_logits.device)
        pred = point_sample(mask_logits, coords.expand(len(mask_logits), -1, -1))
        tgt = point_sample(masks, coords.expand(len(masks), -1, -1), mode="nearest")
        v = point_sample(valid[None], coords, mode="nearest")
        cost_class = -class_logits.softmax(dim=-1)[:, labels]
        pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none") * v
        neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none") * v
        cost_mask = (pos @ tgt.T + neg @ (1 - tgt).T) / v.sum().clamp_min(1)
        p = pred.sigmoid() * v
        cost_dice = 1 - (2 * p @ tgt.T + 1) / (p.sum(-1)[:, None] + (tgt * v).sum(-1)[None] + 1)
        cost = self.class_loss_weight * cost_class + self.mask_loss_weight * cost_mask + self.dice_weight * cost_dice
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)

    def _losses(self, class_logits: Tensor, mask_logits: Tensor, labels: list[Tensor], masks: list[Tensor], valid: Tensor,
                matches: list[tuple[Tensor, Tensor]], num_masks: int) -> dict[str, Tensor]:
        target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long, device=class_logits.device)
        for b, (rows, cols) in enumerate(matches):
            target_classes[b, rows.to(class_logits.device)] = labels[b][cols.to(labels[b].device)]
        loss_class = F.cross_entropy(class_logits.transpose(1, 2), target_classes, weight=self.empty_weight)
        pred = torch.cat([mask_logits[b, rows.to(mask_logits.device)] for b, (rows, _) in enumerate(matches)])
        if len(pred) == 0:
            zero = mask_logits.sum() * 0.0
            return {"class": loss_class, "mask": zero, "dice": zero}
        tgt = torch.cat([masks[b][cols.to(masks[b].device)] for b, (_, cols) in enumerate(matches)])
        val = torch.cat([valid[b].expand(len(rows), -1, -1) for b, (rows, _) in enumerate(matches)])
        point_logits, point_labels, point_valid = self._sample_points(pred, tgt, val)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
        loss_mask = ((bce * point_valid).sum(1) / point_valid.sum(1).clamp_min(1)).sum() / num_masks
        p = point_logits.sigmoid() * point_valid
        dice = 1 - (2 * (p * point_labels).sum(1) + 1) / (p.sum(1) + (point_labels * point_valid).sum(1) + 1)
        return {"class": loss_class, "mask": loss_mask, "dice": dice.sum() / num_masks}

    def _sample_points(self, pred: Tensor, tgt: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Predicted logits, labels and validity at points: mostly the most uncertain ones, or every pixel."""
        if not self.loss_points:
            pred = upsample_to(pred[:, None], tgt.shape[-2:])[:, 0]
            return pred.flatten(1), tgt.flatten(1), valid.flatten(1)
        coords = importance_points(lambda c: -point_sample(pred.detach(), c).abs(), len(pred), self.loss_points,
                                   self.oversample_ratio, self.importance_ratio, pred.device)
        return point_sample(pred, coords), point_sample(tgt, coords, mode="nearest"), point_sample(valid, coords, mode="nearest")
