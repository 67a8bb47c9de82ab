"""Whether an image file is whole: a known format, a sane size, every pixel decodable (import and prepare).

    width, height = check_image(path_or_stream)   # ImageProblem (a ValueError) with one short reason otherwise

PIL alone accepts too much: `Image.open` + `verify()` read only the header and checksums (a truncated
JPEG passes and later decodes to grey pixels with a libjpeg warning), and a header may claim 40000 x 40000
pixels that decoding would try to allocate. Here the size is checked against MAX_IMAGE_PIXELS before any
pixel is decoded, checksums are verified, then the whole image is decoded with truncated files refused.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile, UnidentifiedImageError

# 200 megapixels: ~54x a 1920 x 1920 quadrat and above every camera sensor in use (151 MP medium format);
# decoding one that large takes ~600 MB. A header claiming more is a decompression bomb or a mosaic, not a quadrat.
MAX_IMAGE_PIXELS = 200_000_000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own bomb check (89 MP) would refuse real photos below our limit


UNREADABLE = "unreadable"
DAMAGED = "truncated or damaged"
TOO_LARGE = "too large"


class ImageProblem(ValueError):
    """Why an image file cannot be used, in a few words (the caller names the file); `kind` is one of the three above."""

    def __init__(self, message: str, kind: str = UNREADABLE):
        super().__init__(message)
        self.kind = kind


def check_image(source: Path | str | IO[bytes] | bytes) -> tuple[int, int]:
    """(width, height) of an image that decodes completely and is not larger than MAX_IMAGE_PIXELS."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    start = source.tell() if not isinstance(source, (str, Path)) else 0
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images would pass unnoticed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageProblem(
                        f"its header claims {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                        "an image may have (a decompression bomb or not a quadrat photo)",
                        TOO_LARGE,
                    )
                if width <= 0 or height <= 0:
                    raise ImageProblem(f"its header claims {width}x{height} pixels")
                image.verify()  # checksums (a PNG's CRCs), which decoding alone skips
            if not isinstance(source, (str, Path)):
                source.seek(start)
            with Image.open(source) as image:
                if (
                    image.format == "JPEG"
                ):  # libjpeg still reads every byte at 1/8 scale (truncation is found), in about half the time
                    image.draft(None, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except Image.DecompressionBombError:
        raise ImageProblem(
            f"its header claims more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have (a decompression bomb)",
            TOO_LARGE,
        ) from None
    except UnidentifiedImageError:
        raise ImageProblem("it is empty or not an image file PIL can read") from None
    except FileNotFoundError:
        raise ImageProblem("the file does not exist") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        if isinstance(error, ImageProblem):
            raise
        reason = str(error) or type(error).__name__
        raise ImageProblem(
            f"it does not decode completely ({reason}); the file is truncated or damaged", DAMAGED
        ) from None
    return width, height
