"""What the lessons' live views share: the embedded models they run on, their example pictures, and
pictures enlarged for a projector.
"""

from __future__ import annotations

import numpy as np

from diffusion.studio import ASSETS


PIXEL, LATENT = "ddpm-mnist", "ldm-shapes"  # the embedded models every lesson runs on
COPIES_SHOWN = 16  # lesson 9: new digits compared with the training set
DIGIT = ASSETS / "examples" / "digit-3.png"
SHAPES = ASSETS / "examples" / "shapes-red-circle.png"
PICTURE = {"format": "png", "interactive": False, "elem_classes": ["pixelated"], "buttons": ["download", "fullscreen"]}


def read_picture(path) -> np.ndarray:  # noqa: ANN001 - a path
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def enlarge(picture: np.ndarray, side: int = 96) -> np.ndarray:
    """Small pictures (32x32 digits) repeated to about ``side`` pixels, crisp, for a projector."""
    factor = max(1, side // max(picture.shape[:2]))
    return picture.repeat(factor, 0).repeat(factor, 1)
