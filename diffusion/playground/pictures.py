"""Point clouds drawn as uint8 pictures with numpy (thread-safe and fast enough for every animation frame).

Colours are from the Okabe-Ito palette (safe for the common colour-vision deficiencies) and the layers
differ in lightness as well as hue: the data light grey underneath, the particles dark blue on top.
"""

from __future__ import annotations

import numpy as np

from diffusion.playground.views import EXTENT

BACKGROUND = (255, 255, 255)
GRID = (232, 232, 232)
DATA = (190, 190, 190)  # light grey
PARTICLES = (0, 114, 178)  # Okabe-Ito blue
SECOND = (213, 94, 0)  # Okabe-Ito vermillion: a second set of particles
PICTURE_SIDE = 360


def _disk(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dy * dy + dx * dx <= radius * radius + radius]


def _paint(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int, alpha: float,
           extent: float) -> None:
    side = canvas.shape[0]
    finite = np.asarray(points, np.float64)
    finite = finite[np.isfinite(finite).all(1)]
    col = np.round((finite[:, 0] + extent) / (2 * extent) * (side - 1)).astype(int)
    row = np.round((extent - finite[:, 1]) / (2 * extent) * (side - 1)).astype(int)  # y up
    cover = np.zeros(canvas.shape[:2], bool)
    for dy, dx in _disk(radius):
        r, c = row + dy, col + dx
        inside = (r >= 0) & (r < side) & (c >= 0) & (c < side)
        cover[r[inside], c[inside]] = True
    canvas[cover] = (1 - alpha) * canvas[cover] + alpha * np.array(colour, np.float32)


def cloud_picture(particles: np.ndarray | None, data: np.ndarray | None = None, second: np.ndarray | None = None,
                  side: int = PICTURE_SIDE, extent: float = EXTENT) -> np.ndarray:
    """uint8 (side, side, 3): a light grid at every unit, ``data`` (n, 2) in grey, ``second`` in vermillion and
    ``particles`` in blue, over [-extent, extent]^2 (points outside are left out)."""
    canvas = np.empty((side, side, 3), np.float32)
    canvas[:] = BACKGROUND
    for unit in range(-int(extent), int(extent) + 1):
        pixel = round((unit + extent) / (2 * extent) * (side - 1))
        canvas[pixel, :] = GRID
        canvas[:, pixel] = GRID
    radius = max(1, side // 180)
    if data is not None:
        _paint(canvas, data, DATA, radius, 1.0, extent)
    if second is not None:
        _paint(canvas, second, SECOND, radius, 0.8, extent)
    if particles is not None:
        _paint(canvas, particles, PARTICLES, radius, 0.8, extent)
    return canvas.round().astype(np.uint8)


def run_frames(x_t: np.ndarray, data: np.ndarray | None = None, max_frames: int = 60,
               side: int = PICTURE_SIDE) -> list[np.ndarray]:
    """Frames of a particle run (S + 1, n, 2), subsampled evenly to ``max_frames`` (first and last kept),
    over the data in grey; the last frame is repeated so that a looping animation rests on the result."""
    picks = np.unique(np.linspace(0, len(x_t) - 1, min(len(x_t), max_frames)).round().astype(int))
    frames = [cloud_picture(x_t[i], data, side=side) for i in picks]
    return frames + [frames[-1]] * max(1, len(frames) // 5)
