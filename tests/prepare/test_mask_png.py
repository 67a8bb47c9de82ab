"""Palette PNG masks: valid files that PIL opens as mode P, indices and colours intact."""

import io

import cv2
import numpy as np
from PIL import Image

from prepare.mask_png import encode_mask_png, palette_bytes, read_mask


def test_palette_png_round_trip(tmp_path):
    mask = np.arange(256, dtype=np.uint8).repeat(3).reshape(24, 32)
    colors = [(0, 0, 0), (230, 25, 75), (60, 180, 75)] + [(0, 0, 0)] * 252 + [(255, 255, 255)]
    data = encode_mask_png(mask, palette_bytes(colors))
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # checks every chunk's CRC
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "P" and image.size == (32, 24)
        assert image.getpalette()[:9] == [0, 0, 0, 230, 25, 75, 60, 180, 75]
        assert image.getpalette()[255 * 3 :] == [255, 255, 255]
        assert (np.asarray(image) == mask).all()
    path = tmp_path / "m.png"
    path.write_bytes(data)
    assert (read_mask(path) == mask).all()
    # an independent decoder sees the colours
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert tuple(bgr[mask == 1][0][::-1]) == (230, 25, 75)


def test_compresses_masks():
    mask = np.zeros((1920, 1920), np.uint8)
    mask[200:900, 300:1200] = 3
    assert len(encode_mask_png(mask, palette_bytes([(0, 0, 0)]))) < 30_000
