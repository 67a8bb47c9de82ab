"""Semantic -> instance refinement with SAM (or CoralSCoP, a SAM fine-tuned on corals), as in the CRIOBE system.

The semantic model says which genus each pixel is; its colony outlines follow its coarse windows. SAM,
prompted with each predicted colony (its box, a few positive points deep inside it, and negative points
on neighbouring colonies of other classes), draws a sharper outline; the refined mask keeps the class
the semantic prediction gives most of its pixels. The rules, in the order they apply:

- prompted: every predicted colony of at least `min_area` pixels; smaller ones keep their pixels as predicted;
- class: majority vote of the semantic classes under the refined mask, background included; a mask that is
  mostly background (or empty) is dropped, and its colony keeps its semantic pixels;
- a kept mask replaces its colony: the colony's own pixels outside every kept mask become background;
- overlaps: the smaller kept mask wins (masks are painted largest first), as `prepare` stacks annotated
  colonies; a kept mask also paints over unrefined colonies it covers;
- pixels no kept mask claims keep their semantic class (background stays background);
- a refined mask is read only inside its colony's box grown by `margin` (a quarter of its side, at least
  16 px), so the cost per colony follows its size, not the photo's.

The model behind it is a `PromptableSegmenter` (evaluate/sam_models.py adapts segment_anything checkpoints
and Hugging Face SAM folders); everything here works on numpy masks and is tested with a fake one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from evaluate.colonies import label_regions

REFINE_METHODS = ("none", "sam")
DEFAULT_POSITIVE_POINTS = 3
DEFAULT_NEGATIVE_POINTS = 2
DEFAULT_MIN_AREA = 64  # pixels: smaller colonies are too small for a box prompt to say much
PROMPT_BATCH = 32  # prompts per decoder call: 32 x 256 x 64 x 64 floats of image embedding copies
MARGIN_SHARE, MIN_MARGIN = 0.25, 16


@dataclass(frozen=True)
class RefineSettings:
    """How colonies are prompted; part of what a journal entry depends on."""

    positive_points: int = DEFAULT_POSITIVE_POINTS
    negative_points: int = DEFAULT_NEGATIVE_POINTS
    min_area: int = DEFAULT_MIN_AREA


@dataclass(frozen=True)
class Region:
    """One predicted colony as refinement sees it: class, box (left, top, right, bottom; exclusive), own pixels."""

    class_index: int
    box: tuple[int, int, int, int]
    pixels: np.ndarray  # [bottom-top, right-left] bool


def colony_regions(mask: np.ndarray, min_area: int) -> list[Region]:
    """The colonies of a class mask worth prompting: 4-connected regions of a class (as `find_colonies` finds
    them, without tracing outlines) of at least `min_area` pixels, in id order."""
    numbered = label_regions(np.ascontiguousarray(mask, dtype=np.uint8), min_area)
    return [
        Region(int(numbered.region_class[region]), *numbered.own_pixels(region))
        for region in range(1, len(numbered.stats))
    ]


@dataclass(frozen=True)
class ColonyPrompt:
    """One colony as SAM's prompt, in image pixels: box x0,y0,x1,y1 (inclusive, as SAM's training boxes), points x,y
    with labels (1 inside, 0 outside), and the window [top:bottom, left:right] where the refined mask is read."""

    box: tuple[int, int, int, int]
    points: np.ndarray  # [N, 2] float32 x, y
    labels: np.ndarray  # [N] int64
    window: tuple[int, int, int, int]  # left, top, right, bottom (exclusive)


@dataclass(frozen=True)
class Embedded:
    """An image as the model saw it: its embedding, its size, and the size it was resized to (long side = input)."""

    embedding: Any
    image_size: tuple[int, int]  # height, width
    resized: tuple[int, int]  # height, width inside the model's square input


class PromptableSegmenter(Protocol):
    """What refinement asks of SAM: embed an image once, then decode batches of prompts against it."""

    input_size: int  # side of the square input the encoder sees (1024 for SAM)

    def embed(self, image: np.ndarray) -> Embedded: ...

    def decode(
        self, embedded: Embedded, boxes: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes [B,4], points [B,N,2] (input-frame pixels), labels [B,N] -> mask logits [B,h,w] over the
        whole square input (low resolution), predicted IoU [B]."""
        ...


@dataclass(frozen=True)
class Refinement:
    """The refined class mask and what happened to the colonies: prompted, kept, dropped (mostly background)."""

    mask: np.ndarray
    prompted: int
    kept: int
    dropped: int


def resized_size(height: int, width: int, input_size: int) -> tuple[int, int]:
    """The size SAM resizes an image to: long side `input_size`, aspect kept (segment_anything's ResizeLongestSide)."""
    scale = input_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _spread_points(candidates: np.ndarray, weights: np.ndarray, count: int) -> list[tuple[int, int]]:
    """`count` of the (row, column) `candidates`: the heaviest first, then each farthest from those chosen."""
    if not len(candidates) or count <= 0:
        return []
    chosen = [int(np.argmax(weights))]
    nearest = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    while len(chosen) < min(count, len(candidates)):
        index = int(np.argmax(nearest))
        if nearest[index] == 0:
            break
        chosen.append(index)
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[index], axis=1))
    return [(int(candidates[i][0]), int(candidates[i][1])) for i in chosen]


def interior_points(pixels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to `count` (row, column) points well inside a region: the deepest pixel first, then spread out over
    the pixels at least half as deep, so a point never sits on an outline the semantic model may have blurred."""
    depth = cv2.distanceTransform(np.pad(pixels, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    deep = depth >= max(depth.max() / 2, 1e-6)
    rows, columns = np.nonzero(deep)
    return _spread_points(np.stack([rows, columns], 1).astype(np.float64), depth[rows, columns], count)


def colony_prompt(mask: np.ndarray, colony: Region, settings: RefineSettings) -> ColonyPrompt:
    """The prompt of one colony: its box, points deep inside it, points deep inside other classes in its box."""
    left, top, right, bottom = colony.box
    height, width = mask.shape
    positives = [(top + r, left + c) for r, c in interior_points(colony.pixels, settings.positive_points)]
    crop = mask[top:bottom, left:right]
    others = (crop != colony.class_index) & (crop != 0) & (crop != 255)  # background may be colony SAM should add
    negatives = (
        [(top + r, left + c) for r, c in interior_points(others, settings.negative_points)] if others.any() else []
    )
    points = np.array([(c, r) for r, c in positives + negatives], dtype=np.float32).reshape(-1, 2)
    labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
    margin_x = max(MIN_MARGIN, int(MARGIN_SHARE * (right - left)))
    margin_y = max(MIN_MARGIN, int(MARGIN_SHARE * (bottom - top)))
    window = (
        max(0, left - margin_x),
        max(0, top - margin_y),
        min(width, right + margin_x),
        min(height, bottom + margin_y),
    )
    return ColonyPrompt((left, top, right - 1, bottom - 1), points, labels, window)


def mask_in_window(
    logits: torch.Tensor, window: tuple[int, int, int, int], embedded: Embedded, input_size: int
) -> np.ndarray:
    """A prompt's low-resolution logits [h,w] (over the square input) as a bool mask of the image pixels in `window`.

    Each image pixel's centre is mapped into the input frame and the logits are read there bilinearly, in one
    step for the window alone, instead of SAM's upsampling of the whole input to the whole image per mask.
    """
    left, top, right, bottom = window
    (height, width), (resized_h, resized_w) = embedded.image_size, embedded.resized
    ys = (torch.arange(top, bottom, dtype=torch.float32) + 0.5) * (resized_h / height)
    xs = (torch.arange(left, right, dtype=torch.float32) + 0.5) * (resized_w / width)
    grid_y, grid_x = torch.meshgrid(ys * 2 / input_size - 1, xs * 2 / input_size - 1, indexing="ij")
    grid = torch.stack([grid_x, grid_y], -1)[None].to(logits.device)
    sampled = F.grid_sample(logits[None, None].float(), grid, mode="bilinear", align_corners=False)
    return (sampled[0, 0] > 0).cpu().numpy()


def majority_class(semantic: np.ndarray, refined: np.ndarray, num_classes: int) -> int:
    """The class most of the refined mask's pixels have in the semantic prediction (0, background, when empty;
    ties go to the lower index, so a tie with background drops the mask)."""
    votes = np.bincount(semantic[refined], minlength=num_classes)[:num_classes]
    return int(np.argmax(votes)) if votes.sum() else 0


def combine(
    semantic: np.ndarray,
    colonies: Sequence[Region],
    refined: Sequence[np.ndarray],
    windows: Sequence[tuple[int, int, int, int]],
    num_classes: int,
) -> Refinement:
    """The refined class mask from the semantic one and each prompted colony's refined mask (in its window)."""
    out = semantic.copy()
    kept: list[tuple[int, int, np.ndarray, tuple[int, int, int, int]]] = []
    for colony, pixels, window in zip(colonies, refined, windows):
        left, top, right, bottom = window
        label = majority_class(semantic[top:bottom, left:right], pixels, num_classes)
        if label == 0:
            continue
        c_left, c_top, c_right, c_bottom = colony.box
        out[c_top:c_bottom, c_left:c_right][colony.pixels] = 0  # replaced by its refined mask
        kept.append((int(pixels.sum()), label, pixels, window))
    for _, label, pixels, (left, top, right, bottom) in sorted(kept, key=lambda k: -k[0]):  # smaller on top
        out[top:bottom, left:right][pixels] = label
    return Refinement(out, len(refined), len(kept), len(refined) - len(kept))


def refine_mask(
    model: PromptableSegmenter, image: np.ndarray, semantic: np.ndarray, num_classes: int, settings: RefineSettings
) -> Refinement:
    """Refine one photo's semantic class mask with SAM: one image embedding, then each colony's prompt."""
    colonies = colony_regions(semantic, settings.min_area)
    if not colonies:
        return Refinement(semantic.copy(), 0, 0, 0)
    prompts = [colony_prompt(semantic, colony, settings) for colony in colonies]
    embedded = model.embed(image)
    refined = refined_windows(model, embedded, prompts)
    return combine(semantic, colonies, refined, [p.window for p in prompts], num_classes)


def refined_windows(
    model: PromptableSegmenter, embedded: Embedded, prompts: Sequence[ColonyPrompt]
) -> list[np.ndarray]:
    """Each prompt's refined mask in its window; prompts with equally many points are decoded together (no padding
    points, which SAM and Hugging Face's port treat differently)."""
    (height, width), (resized_h, resized_w) = embedded.image_size, embedded.resized
    scale = np.array([resized_w / width, resized_h / height], dtype=np.float32)
    refined: list[np.ndarray | None] = [None] * len(prompts)
    by_count: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_count.setdefault(len(prompt.labels), []).append(index)
    for indices in by_count.values():
        for start in range(0, len(indices), PROMPT_BATCH):
            batch = indices[start : start + PROMPT_BATCH]
            boxes = torch.tensor(np.array([prompts[i].box for i in batch], np.float32).reshape(-1, 2, 2) * scale)
            points = torch.tensor(np.stack([prompts[i].points * scale for i in batch]))
            labels = torch.tensor(np.stack([prompts[i].labels for i in batch]))
            logits, _ = model.decode(embedded, boxes.reshape(-1, 4), points, labels)
            for i, mask_logits in zip(batch, logits):
                refined[i] = mask_in_window(mask_logits, prompts[i].window, embedded, model.input_size)
    return [r for r in refined if r is not None]


def check_refine_flags(refine: str, sam_weights: str | None) -> bool:
    """Whether `--refine`/`--sam-weights` ask for SAM refinement; a UserError when they disagree."""
    if refine not in REFINE_METHODS:
        raise UserError(f"--refine must be one of {', '.join(REFINE_METHODS)}, not {refine!r}")
    if refine == "sam" and not sam_weights:
        raise UserError(
            "--refine sam needs --sam-weights: a segment_anything checkpoint (.pth) or a Hugging Face SAM folder"
        )
    if refine == "none" and sam_weights:
        raise UserError("--sam-weights is used only with --refine sam; add --refine sam or leave --sam-weights out")
    return refine == "sam"
