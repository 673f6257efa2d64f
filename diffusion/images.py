"""Untrusted image input: bounded in bytes and in pixels before anything is decoded.

A small PNG can hold a huge image (a 12000x12000 black PNG is 140 KB and decodes to 430 MB),
and an image sent inline as a ``data:`` URL never meets the upload route's byte limit. Every
image the app accepts comes through :func:`read_image`, which checks the byte size first, then
the pixel count from the header (Pillow reads only the header on ``open``), and only then decodes.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # the same as the upload route's limit (app.py: max_file_size)
MAX_IMAGE_PIXELS = 4096 * 4096  # 16.8 megapixels: any phone photo, decoded to at most 50 MB of RGB
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # the decoders an upload may reach
IMAGE_LIMITS = f"{MAX_IMAGE_BYTES // 2**20} MB and {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels"  # for labels


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def data_url_bytes(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a base64 ``data:`` URL, refused before decoding when they would exceed ``max_bytes``."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("an inline image must be a base64 data: URL (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ValueError(f"the image is larger than the {_mb(max_bytes)} limit "
                         f"(about {_mb(len(payload) * 3 // 4)} inline)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the inline image is not valid base64") from None


def read_image(source: bytes | str | Path, max_bytes: int = MAX_IMAGE_BYTES,
               max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an untrusted image file (a path or its bytes) to uint8 RGB (H, W, 3).

    Refused with a ``ValueError`` that names the limit: more than ``max_bytes`` bytes, more than
    ``max_pixels`` pixels (read from the header, before the pixels are decoded), a format other than
    PNG, JPEG, WebP, GIF or BMP, or a file that is not an image or is cut short. EXIF rotation is
    applied; of an animation the first frame is used.
    """
    if isinstance(source, bytes):
        size, stream = len(source), io.BytesIO(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            raise ValueError("the image file could not be read") from None
        stream = None
    if size > max_bytes:
        raise ValueError(f"the image is larger than the {_mb(max_bytes)} limit ({_mb(size)})")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns (and raises past twice its limit); ours is stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream if stream is not None else path, formats=FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ValueError(f"the image is {width}x{height} pixels; the limit is "
                                     f"{max_pixels / 1e6:.1f} megapixels (e.g. 4096x4096)")
                image = ImageOps.exif_transpose(image)
                return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise ValueError(f"the image has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} million pixels; the limit is "
                         f"{max_pixels / 1e6:.1f} megapixels (e.g. 4096x4096)") from None
    except UnidentifiedImageError:
        raise ValueError("the file is not an image this app reads (PNG, JPEG, WebP, GIF or BMP)") from None
    except (OSError, SyntaxError, EOFError) as error:  # truncated or corrupt data inside a known format
        logger.info("refused a broken image: %s", error)
        raise ValueError("the image file is damaged or cut short and could not be decoded") from None
