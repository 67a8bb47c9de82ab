"""The one interface every segmentation head follows: a list of feature maps in, class logits out.

Heads never see images: they take the backbone's maps (live or cached), so training on cached
features and inference through `Segmenter` use the very same module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.labels import IGNORE_INDEX
from models.heads.points import sampled_logits_and_labels, scaled_target

# The loss on 4,096 points per image (3/4 of them where the prediction is least certain) trained the
# cached linear and segformer heads as well as the loss on every pixel, several times faster (benchmarks/README.md).
DEFAULT_LOSS_POINTS = 4096


class SegHead(nn.Module):
    """Base class: `forward(features) -> logits [B,K,h,w]`, `loss(features, target) -> {"loss": ...}`.

    `h, w` are the feature maps' size times `output_scale` (1 for heads that classify each patch,
    4 for heads that decode a finer pyramid); callers interpolate to the image size.
    `classifier_prefixes` names the parameters whose shape depends on the number of classes,
    which a warm start from another taxonomy leaves out.

    The loss options: `loss_points` positions per image where the loss is computed (most of them
    where the prediction is least certain: `oversample_ratio` x as many candidates, of which the
    `importance_ratio` share that is most uncertain; 0: every pixel of the target), or, with
    `loss_points: 0`, `loss_scale` < 1 for the loss on the target subsampled to that fraction of its size.
    """

    output_scale: int = 1
    classifier_prefixes: tuple[str, ...] = ("classifier.",)
    name: str  # the registry name and options, set by `models.heads.build_head`
    config: dict[str, Any]
    class_weights: Tensor | None  # a buffer registered in __init__

    def __init__(
        self,
        in_channels: int,
        num_inputs: int,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        loss_points: int = DEFAULT_LOSS_POINTS,
        loss_scale: float = 1.0,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_inputs < 1 or in_channels < 1:
            raise ValueError(
                f"a head needs positive sizes, got in_channels={in_channels}, num_inputs={num_inputs}, num_classes={num_classes}"
            )
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        if loss_points < 0 or not 0 < loss_scale <= 1 or oversample_ratio < 1 or not 0 <= importance_ratio <= 1:
            raise ValueError(
                "loss options out of range: loss_points >= 0 (0: every pixel), 0 < loss_scale <= 1, oversample_ratio >= 1, "
                f"0 <= importance_ratio <= 1; got {loss_points}, {loss_scale}, {oversample_ratio}, {importance_ratio}"
            )
        if loss_points and loss_scale < 1:
            raise ValueError(
                f"loss_scale {loss_scale} applies to the loss on every pixel; set loss_points: 0 with it (now {loss_points})"
            )
        self.in_channels = in_channels
        self.num_inputs = num_inputs
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.loss_points, self.loss_scale = loss_points, loss_scale
        self.oversample_ratio, self.importance_ratio = oversample_ratio, importance_ratio
        # Loss weights are a training choice, not model weights: kept out of the checkpoint.
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def check_features(self, features: Sequence[Tensor]) -> None:
        """Fail with a readable message when the caller passes the wrong number or width of maps."""
        if len(features) != self.num_inputs:
            raise ValueError(f"{type(self).__name__} takes {self.num_inputs} feature maps, got {len(features)}")
        for f in features:
            if f.ndim != 4 or f.shape[1] != self.in_channels:
                raise ValueError(f"{type(self).__name__} expects maps [B,{self.in_channels},h,w], got {list(f.shape)}")

    def forward(self, features: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def loss(self, features: list[Tensor], target: Tensor) -> dict[str, Tensor]:
        """Cross-entropy (plus dice when `dice_weight` > 0) at sampled points, or of the logits upsampled to the target."""
        logits = self(features).float()
        if self.loss_points:
            logits, target = sampled_logits_and_labels(
                logits, target, self.loss_points, self.oversample_ratio, self.importance_ratio, IGNORE_INDEX
            )
            logits, target = logits.unsqueeze(-1), target.unsqueeze(-1)  # [B,K,P,1]: points as a one-pixel-wide image
        elif self.loss_scale < 1:
            target = scaled_target(target, self.loss_scale)
        return pixel_losses(logits, target, self.class_weights, self.dice_weight)


def upsample_to(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of logits to `size` (a no-op when it already matches)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def pixel_losses(
    logits: Tensor, target: Tensor, class_weights: Tensor | None = None, dice_weight: float = 0.0
) -> dict[str, Tensor]:
    """Per-pixel losses at the target's resolution; pixels labelled 255 count for nothing."""
    logits = upsample_to(logits, target.shape[-2:]).float()
    ce = F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE_INDEX)
    if not torch.isfinite(ce):  # every pixel ignored: nothing to learn from this batch, not NaN
        ce = logits.sum() * 0.0
    out = {"ce": ce}
    total = ce
    if dice_weight > 0:
        out["dice"] = soft_dice_loss(logits, target)
        total = total + dice_weight * out["dice"]
    out["loss"] = total
    return out


def soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - mean soft Dice over the classes present in the batch or predicted, on labelled pixels only."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1).float()
    probs = logits.softmax(dim=1) * valid
    onehot = (
        F.one_hot(target.clamp(max=num_classes - 1) * (target != IGNORE_INDEX), num_classes).permute(0, 3, 1, 2).float()
        * valid
    )
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = denom > 0
    dice = (2 * inter[present] + 1.0) / (denom[present] + 1.0)
    return 1.0 - dice.mean() if present.any() else logits.sum() * 0.0
