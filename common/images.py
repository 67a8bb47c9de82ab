"""Image files and bytes as `[H, W, 3]` uint8 RGB, read one way by every stage (train, evaluate, the CVAT push).

Pixels are taken as stored, EXIF orientation not applied: the masks prepare draws, the polygons CVAT
holds and the predictions all use the stored orientation.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError

_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_image(path: str | Path, oriented: bool = False) -> np.ndarray:
    """An image file as `[H, W, 3]` uint8 RGB, pixels as stored (EXIF orientation not applied, like the masks).

    `oriented` turns the pixels as the EXIF orientation says, as photos imported in place are shown and sized.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if oriented else _FLAGS)
    if image is None:
        raise UserError(f"cannot read image {path}; the file is damaged or not an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes (e.g. a CVAT frame named `name`) as `[H, W, 3]` uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _FLAGS)
    if image is None:
        raise UserError(f"{name} is not an image OpenCV can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
