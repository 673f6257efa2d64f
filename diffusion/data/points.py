"""2-D point clouds for the playground: the toy distributions of the diffusion literature, a word,
and the user's own drawing.

Every set is a sampler ``draw(n, generator) -> (n, 2)`` in its own units, normalised once (zero mean,
one overall standard deviation, measured on a fixed reference draw of :data:`REFERENCE_POINTS`
points with seed 0) so that the forward process meets all of them on the same scale: x_0 has unit
variance, like the pixels in [-1, 1] of the image models. Normalising by one scalar keeps the
shape's aspect ratio. Every random number comes from the caller's seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

REFERENCE_POINTS = 8192
MAX_WORD_CHARS = 12
WORD_CHARS = set(string.ascii_letters + string.digits + " !?&+-=*#@.,:;'\"()")
DRAWING_MIN_PIXELS = 20  # a drawing needs at least this many inked pixels
DRAWING_SIDE = 128  # a sketch is read at this resolution (cost bounded whatever the canvas)

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def _normal(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, 2, generator=g)


def _uniform(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g)


def two_moons(n: int, g: torch.Generator, noise: float = 0.06) -> torch.Tensor:
    """Two interleaved half circles (as scikit-learn's ``make_moons``), Gaussian noise of std ``noise``."""
    upper = torch.rand(n, generator=g) < 0.5
    angle = _uniform(n, g) * math.pi
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return torch.stack([x, y], 1) + noise * _normal(n, g)


def swiss_roll(n: int, g: torch.Generator, noise: float = 0.25) -> torch.Tensor:
    """The 2-D Swiss roll: r = t, angle t, t in [1.5 pi, 4.5 pi]."""
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + noise * _normal(n, g)


def eight_gaussians(n: int, g: torch.Generator, radius: float = 2.0, std: float = 0.1) -> torch.Tensor:
    """Eight Gaussians of std ``std`` on a circle of radius ``radius``."""
    k = torch.randint(0, 8, (n,), generator=g).float()
    centres = radius * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return centres + std * _normal(n, g)


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the black squares of a 4x4 checkerboard over [-2, 2]^2."""
    x = 4 * _uniform(n, g) - 2
    row = torch.randint(0, 2, (n,), generator=g).float()
    y = _uniform(n, g) + 2 * row - 2 + (torch.floor(x) % 2)  # the square above or below is the other colour
    return torch.stack([x, y], 1)


def spiral(n: int, g: torch.Generator, turns: float = 1.5, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved arms of an Archimedean spiral (r grows with the angle), ``turns`` turns each."""
    arm = torch.randint(0, 2, (n,), generator=g).float()
    r = torch.sqrt(_uniform(n, g)) * 0.95 + 0.05  # sqrt: uniform density along the arm's length
    angle = r * turns * 2 * math.pi + arm * math.pi
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1) + noise * _normal(n, g)


def mask_sampler(mask: np.ndarray) -> Sampler:
    """Points uniform over the inked pixels of ``mask`` (H, W) bool, y up, one pixel = one unit."""
    rows, cols = np.nonzero(mask)
    if len(rows) < DRAWING_MIN_PIXELS:
        raise ValueError(f"the drawing has {len(rows)} inked pixels; draw at least {DRAWING_MIN_PIXELS}")
    xy = torch.from_numpy(np.stack([cols, mask.shape[0] - 1 - rows], 1).astype(np.float32))

    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(xy), (n,), generator=g)
        return xy[pick] + torch.rand(n, 2, generator=g)  # uniform within the pixel

    return draw


def word_mask(word: str, size: int = 64) -> np.ndarray:
    """``word`` rendered in Pillow's bundled font at ``size`` pixels, as an ink mask (H, W) bool."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(word)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), word, fill=255, font=font)
    return np.asarray(canvas) > 127


def check_word(word: object) -> str:
    """The word to render: 1 to :data:`MAX_WORD_CHARS` characters of :data:`WORD_CHARS`, not blank."""
    text = str(word if word is not None else "").strip()
    if not text:
        raise ValueError("type a word to draw as points")
    if len(text) > MAX_WORD_CHARS:
        raise ValueError(f"the word may have at most {MAX_WORD_CHARS} characters, got {len(text)}")
    bad = sorted(set(text) - WORD_CHARS)
    if bad:
        raise ValueError(f"the word may use letters, digits, spaces and simple punctuation; not {''.join(bad)!r}")
    return text


def drawing_mask(image: np.ndarray) -> np.ndarray:
    """The ink of a sketch (uint8 (H, W), (H, W, 3) or (H, W, 4)) at :data:`DRAWING_SIDE` pixels on its long side.

    Ink is what differs from the background: opaque pixels where the sketch has an alpha channel
    with transparency, else pixels darker than the image's median brightness by 64 levels.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise ValueError("the drawing must be a uint8 image (H, W[, 3 or 4])")
    picture = Image.fromarray(array)
    scale = DRAWING_SIDE / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.Resampling.BOX)
    small = np.asarray(picture)
    if small.ndim == 3 and small.shape[2] == 4 and small[..., 3].min() < 128:
        return small[..., 3] >= 128
    grey = np.asarray(picture.convert("L"), dtype=np.int16)
    return grey < np.median(grey) - 64


@dataclass(frozen=True)
class PointSet:
    """A named 2-D distribution, normalised: ``sample(n, generator)`` gives (n, 2) float32 with about
    zero mean and unit standard deviation."""

    name: str
    title: str
    raw: Sampler = field(repr=False, compare=False)
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return ((self.raw(n, generator) - torch.tensor(self.shift)) / self.scale).float()

    @classmethod
    def normalised(cls, name: str, title: str, raw: Sampler) -> PointSet:
        reference = raw(REFERENCE_POINTS, torch.Generator().manual_seed(0))
        mean = reference.mean(0)
        std = float((reference - mean).pow(2).sum(1).mean().div(2).sqrt())  # one scalar: aspect kept
        return cls(name, title, raw, (float(mean[0]), float(mean[1])), std)


BUILT_IN: dict[str, tuple[str, Sampler]] = {
    "moons": ("Two moons", two_moons),
    "swiss-roll": ("Swiss roll", swiss_roll),
    "8-gaussians": ("8 Gaussians", eight_gaussians),
    "checkerboard": ("Checkerboard", checkerboard),
    "spiral": ("Spiral", spiral),
}
DATASETS: dict[str, str] = {**{k: title for k, (title, _) in BUILT_IN.items()},
                            "word": "A word (type it)", "drawing": "Your drawing"}


@lru_cache(maxsize=64)
def built_in(name: str) -> PointSet:
    title, raw = BUILT_IN[name]
    return PointSet.normalised(name, title, raw)


@lru_cache(maxsize=64)
def word_set(word: str) -> PointSet:
    return PointSet.normalised("word", f"the word {word!r}", mask_sampler(word_mask(word)))


def drawing_set(mask: np.ndarray) -> PointSet:
    """The set of a drawing's ink mask (H, W) bool (:func:`drawing_mask`)."""
    return PointSet.normalised("drawing", "your drawing", mask_sampler(mask))


def point_set(name: str, word: str | None = None, drawing: np.ndarray | None = None) -> PointSet:
    """The set ``name`` (a key of :data:`DATASETS`); "word" needs ``word``, "drawing" a sketch image."""
    if name in BUILT_IN:
        return built_in(name)
    if name == "word":
        return word_set(check_word(word))
    if name == "drawing":
        if drawing is None:
            raise ValueError("draw something on the sketchpad first (or choose another data set)")
        return drawing_set(drawing_mask(drawing))
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
