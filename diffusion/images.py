"""Pictures: untrusted image input, bounded before decoding, and the uint8 pictures of tensors.

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
import torch
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


# ----- pictures of tensors -----
# Every picture the app shows is uint8: (H, W) for one channel, (H, W, 3) for RGB.


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W) for one channel, (B, H, W, 3) for RGB."""
    arr = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    arr = arr.transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]: the inverse of :func:`to_uint8`."""
    # a read-only array (a decoded image shared between requests) is copied: torch may not wrap it
    return torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_display(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(B, C, H, W) float -> uint8 (B, H, W) or (B, H, W, 3), mapping [lo, hi] to [0, 255]; of
    latents (C > 3) the first three channels are shown as RGB."""
    x = x.float()
    if x.shape[1] > 3:
        x = x[:, :3]
    return to_uint8((x - lo) / (hi - lo) * 2 - 1)


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W) or (N, H, W, 3) into one uint8 grid image on white."""
    n = len(images)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    h, w = images.shape[1:3]
    shape = (nrows * (h + pad) + pad, ncols * (w + pad) + pad, *images.shape[3:])
    grid = np.full(shape, 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def tile(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, 3]) -> the one image for N = 1, else a grid of them."""
    return images[0] if len(images) == 1 else make_grid(images)


def latent_channels(latent: torch.Tensor, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    """(C, h, w) latents -> uint8 (h, C * (w + 1) - 1): each channel as a grayscale image, side by side."""
    x = ((latent.float().cpu().clamp(lo, hi) - lo) / (hi - lo) * 255).round().to(torch.uint8).numpy()
    c, h, w = x.shape
    out = np.full((h, c * (w + 1) - 1), 255, np.uint8)
    for i in range(c):
        out[:, i * (w + 1): i * (w + 1) + w] = x[i]
    return out


def prepare_image(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) -> (1, channels, size, size) float in [-1, 1].

    Centre-cropped to a square, resized with Pillow's bicubic filter, alpha dropped, converted
    to grayscale for one-channel models.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"expected an image (H, W) or (H, W, C), got shape {arr.shape}")
    pil = Image.fromarray(arr.astype(np.uint8))
    w, h = pil.size
    side = min(w, h)
    pil = pil.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    pil = pil.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 127.5 - 1)
    return (x[None, None] if channels == 1 else x.permute(2, 0, 1)[None]).contiguous()
