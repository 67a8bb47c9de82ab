"""Mask classification: heads whose learned queries each predict a class and a mask (mask2former, pmt).

A subclass says how it turns features into (class logits, mask logits) per query in `decode`; the
rest is shared. Training matches queries to the classes present in each image (Hungarian, on
shared sampled points), then sums class, mask (BCE) and dice losses over every prediction stage
`decode` returns, masks compared on `loss_points` points, mostly where they are least certain
(models/heads/points.py). Semantic inference: per class, the sum over queries of P(class) x mask
probability, returned as its logarithm so that a softmax over it gives a class distribution, like
any head's logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from models.heads.base import IGNORE_INDEX, SegHead, upsample_to
from models.heads.points import importance_points, point_sample, scaled_target


class MaskClassificationHead(SegHead):
    """Base of the query heads: `decode(features) -> [(class logits [B,Q,K+1], mask logits [B,Q,h,w]), ...]`."""

    classifier_prefixes = ("class_embed.",)
    empty_weight: Tensor  # a buffer registered in __init__

    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        *,
        loss_points: int,
        oversample_ratio: float,
        importance_ratio: float,
        class_loss_weight: float,
        mask_loss_weight: float,
        dice_weight: float,
        no_object_weight: float,
        class_weights: Sequence[float] | None,
        loss_scale: float,
    ) -> None:
        super().__init__(
            in_channels,
            num_inputs,
            num_classes,
            class_weights=class_weights,
            dice_weight=dice_weight,
            loss_points=loss_points,
            loss_scale=loss_scale,
            oversample_ratio=oversample_ratio,
            importance_ratio=importance_ratio,
        )
        self.class_loss_weight, self.mask_loss_weight = class_loss_weight, mask_loss_weight
        empty = torch.ones(num_classes + 1)  # the last class is "no object"
        if self.class_weights is not None:
            empty[:-1] = self.class_weights
        empty[-1] = no_object_weight
        self.register_buffer("empty_weight", empty, persistent=False)

    def decode(self, features: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """(class logits [B,Q,K+1], mask logits [B,Q,h,w]) after each prediction stage, the last one best."""
        raise NotImplementedError

    def forward(self, features: list[Tensor]) -> Tensor:
        class_logits, mask_logits = self.decode(features)[-1]
        probs = class_logits.float().softmax(dim=-1)[..., :-1]
        scores = torch.einsum("bqk,bqhw->bkhw", probs, mask_logits.float().sigmoid())
        return scores.clamp_min(1e-6).log()

    def loss(self, features: list[Tensor], target: Tensor) -> dict[str, Tensor]:
        """Class + mask + dice losses of every prediction stage, after Hungarian matching per image."""
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
            matches = [
                self._match(c, m, lab, tm, v)
                for c, m, lab, tm, v in zip(class_logits, mask_logits, labels, masks, valid)
            ]
            parts = self._losses(class_logits, mask_logits, labels, masks, valid, matches, num_masks)
            total = (
                total
                + self.class_loss_weight * parts["class"]
                + self.mask_loss_weight * parts["mask"]
                + self.dice_weight * parts["dice"]
            )
        return {"loss": total, **parts}

    @torch.no_grad()
    def _match(
        self, class_logits: Tensor, mask_logits: Tensor, labels: Tensor, masks: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
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

    def _losses(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        labels: list[Tensor],
        masks: list[Tensor],
        valid: Tensor,
        matches: list[tuple[Tensor, Tensor]],
        num_masks: int,
    ) -> dict[str, Tensor]:
        target_classes = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.long, device=class_logits.device
        )
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
        coords = importance_points(
            lambda c: -point_sample(pred.detach(), c).abs(),
            len(pred),
            self.loss_points,
            self.oversample_ratio,
            self.importance_ratio,
            pred.device,
        )
        return (
            point_sample(pred, coords),
            point_sample(tgt, coords, mode="nearest"),
            point_sample(valid, coords, mode="nearest"),
        )
