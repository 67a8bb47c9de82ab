"""A fixed bank of random training views per image: scale, crop, and one of the 8 dihedral transforms.

The backbone is frozen, so a view's features never change: fixing K views per image up front lets
the feature cache compute each of them once. Quadrats are photographed from above, so every
rotation by 90 degrees and every mirror image is a valid picture of a reef. A view depends only on
the seed, the image's name and size (never on the order of the images), so adding an image leaves
the other images' views, and their cached features, untouched.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass
from typing import overload

import cv2
import numpy as np

from common.labels import IGNORE_INDEX


@dataclass(frozen=True)
class View:
    """A square window of the original image, resized to `crop`, then flipped and rotated.

    `top`, `left`, `size` are in original pixels (the window may reach past the image: that part
    is padded, with ignore in the mask); `flip` mirrors left-right, then `rot90` quarter turns
    counter-clockwise follow (numpy's `rot90`); together they cover all 8 dihedral transforms.
    """

    top: int
    left: int
    size: int
    crop: int
    flip: bool
    rot90: int


def view_bank(
    name: str, height: int, width: int, k: int, crop: int, scale_range: tuple[float, float], seed: int
) -> list[View]:
    """K reproducible views of one image, drawn from `seed` and the image's name only.

    A window is never larger than the image's shorter side (a small image is seen whole, not
    surrounded by padding that would teach nothing).
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    views = []
    for _ in range(k):
        scale = float(rng.uniform(scale_range[0], scale_range[1]))
        size = max(1, min(round(crop / scale), height, width))
        top = int(rng.integers(0, max(height - size, 0) + 1))
        left = int(rng.integers(0, max(width - size, 0) + 1))
        views.append(
            View(top=top, left=left, size=size, crop=crop, flip=bool(rng.integers(2)), rot90=int(rng.integers(4)))
        )
    return views


def views_key(views: list[View]) -> str:
    """Short hash of the views' parameters: part of the cache key, so a changed bank never reuses features."""
    return hashlib.sha256(json.dumps([asdict(v) for v in views]).encode()).hexdigest()[:16]


def _window(array: np.ndarray, view: View, fill: int) -> np.ndarray:
    """The view's `size`x`size` window, padded with `fill` where it leaves the image."""
    out = np.full((view.size, view.size) + array.shape[2:], fill, dtype=array.dtype)
    bottom = min(view.top + view.size, array.shape[0])
    right = min(view.left + view.size, array.shape[1])
    out[: bottom - view.top, : right - view.left] = array[view.top : bottom, view.left : right]
    return out


def _dihedral(array: np.ndarray, view: View) -> np.ndarray:
    if view.flip:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, view.rot90))


@overload
def apply_view(image: np.ndarray, mask: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def apply_view(image: np.ndarray, mask: None, view: View) -> tuple[np.ndarray, None]: ...


def apply_view(image: np.ndarray, mask: np.ndarray | None, view: View) -> tuple[np.ndarray, np.ndarray | None]:
    """The view of an `[H, W, 3]` uint8 image and its `[H, W]` mask, transformed together.

    The image is resized with area/linear interpolation, the mask with nearest neighbour so class
    indices stay class indices; pixels outside the image become black and ignore (255).
    """
    interpolation = cv2.INTER_AREA if view.size > view.crop else cv2.INTER_LINEAR
    crop_image = cv2.resize(_window(image, view, 0), (view.crop, view.crop), interpolation=interpolation)
    crop_image = _dihedral(crop_image, view)
    if mask is None:
        return crop_image, None
    crop_mask = cv2.resize(
        _window(mask, view, IGNORE_INDEX), (view.crop, view.crop), interpolation=cv2.INTER_NEAREST_EXACT
    )
    return crop_image, _dihedral(crop_mask, view)
