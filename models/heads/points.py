"""Losses on sampled points instead of every pixel (PointRend's and Mask2Former's importance sampling).

A head's logits are at feature resolution (32² for a 448² crop on a /14 backbone); upsampling them to
every pixel of the target just to average a loss over it is most of a cached head's training step.
Sampling instead: draw `oversample_ratio` x `points` random positions per image, keep the
`importance_ratio` share where the prediction is least certain, add uniform positions for the rest,
and compute the loss on the logits interpolated at those positions only. `loss_scale` is the
simpler alternative: the loss on a regular grid of the target at a fraction of its resolution.
Both respect the ignore index. The default was chosen by `benchmarks/bench_heads.py` (benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(maps: Tensor, coords: Tensor, mode: str = "bilinear") -> Tensor:
    """Values of maps [N,C,H,W] (or [N,H,W]) at points coords [N,P,2] ((x, y) in [0,1]), as [N,C,P] (or [N,P]).

    Position u of the image is where `F.interpolate(..., align_corners=False)` puts it too, so a
    point at a pixel's centre gets exactly that pixel's upsampled value (edges clamped, as there).
    """
    single = maps.ndim == 3
    grid = (2 * coords - 1).unsqueeze(2).to(maps.dtype)
    values = F.grid_sample(
        maps.unsqueeze(1) if single else maps, grid, mode=mode, padding_mode="border", align_corners=False
    )[..., 0]
    return values[:, 0] if single else values


def pixel_at(target: Tensor, coords: Tensor) -> Tensor:
    """Labels of target [N,H,W] at the pixels that points coords [N,P,2] fall in, as [N,P] (exact, no interpolation)."""
    height, width = target.shape[-2:]
    x = (coords[..., 0] * width).long().clamp_(0, width - 1)
    y = (coords[..., 1] * height).long().clamp_(0, height - 1)
    return torch.gather(target.flatten(1), 1, y * width + x)


@torch.no_grad()
def importance_points(
    uncertainty: Callable[[Tensor], Tensor],
    batch: int,
    points: int,
    oversample_ratio: float,
    importance_ratio: float,
    device: torch.device,
) -> Tensor:
    """[batch, points, 2] positions: the most uncertain of the oversampled candidates, then uniform ones.

    `uncertainty(coords [batch, M, 2]) -> [batch, M]`, higher for less certain predictions (and
    -inf where a point must not be chosen, such as ignored pixels).
    """
    chosen = min(points, int(points * importance_ratio))
    uniform = torch.rand(batch, points - chosen, 2, device=device)
    if chosen == 0:
        return uniform
    candidates = torch.rand(batch, max(chosen, int(points * oversample_ratio)), 2, device=device)
    top = uncertainty(candidates).topk(chosen, dim=1).indices
    return torch.cat([torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2)), uniform], dim=1)


def class_uncertainty(logits: Tensor) -> Tensor:
    """PointRend's uncertainty of class logits [B,K,P]: minus the margin between the two best classes, [B,P].

    The two best are kept by one pass over the classes: on CPUs `topk` across the class dimension of
    [B,K,P] was the slowest part of a cached head's step (66 ms of 200 for 8 x 12,288 candidates).
    """
    if logits.shape[1] == 1:
        return -logits[:, 0].abs()
    best, second = torch.maximum(logits[:, 0], logits[:, 1]), torch.minimum(logits[:, 0], logits[:, 1])
    for k in range(2, logits.shape[1]):
        second = torch.maximum(second, torch.minimum(best, logits[:, k]))
        best = torch.maximum(best, logits[:, k])
    return second - best


def sampled_logits_and_labels(
    logits: Tensor, target: Tensor, points: int, oversample_ratio: float, importance_ratio: float, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """Logits [B,K,P] interpolated at `points` positions per image, and the target's labels there [B,P].

    Ignored pixels are never chosen as uncertain points; uniform points may land on them and then
    count for nothing, as in the full-resolution loss.
    """

    def uncertainty(coords: Tensor) -> Tensor:
        score = class_uncertainty(point_sample(logits.detach(), coords))
        return score.masked_fill(pixel_at(target, coords) == ignore_index, -torch.inf)

    coords = importance_points(uncertainty, logits.shape[0], points, oversample_ratio, importance_ratio, logits.device)
    return point_sample(logits, coords), pixel_at(target, coords)


def scaled_target(target: Tensor, scale: float) -> Tensor:
    """The target on a regular grid at `scale` of its resolution: the pixel under each coarse cell's centre."""
    height, width = target.shape[-2:]
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    rows = ((torch.arange(h, device=target.device) + 0.5) * height / h).long().clamp_(max=height - 1)
    cols = ((torch.arange(w, device=target.device) + 0.5) * width / w).long().clamp_(max=width - 1)
    return target[..., rows[:, None], cols[None, :]]
