"""Mazes and plans drawn as uint8 pictures with Pillow (fast enough for every animation frame).

Colours are from the Okabe-Ito palette and differ in lightness as well as hue: walls dark grey, a clear
plan blue, a colliding plan vermillion with its first offending segment crossed out, the model's x0
estimate bluish green, the start a black disk and the goal an orange ring. Text is large enough for a
projector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from diffusion.data.mazes import Maze

CELL = 56  # pixels per maze cell
WALL = (64, 64, 64)
FLOOR = (255, 255, 255)
GRID = (236, 236, 236)
CLEAR = (0, 114, 178)  # Okabe-Ito blue
COLLIDES = (213, 94, 0)  # vermillion
ESTIMATE = (0, 158, 115)  # bluish green: the model's x0 estimate
START = (0, 0, 0)
GOAL = (230, 159, 0)  # orange
NOISE_X = (0, 114, 178)
NOISE_Y = (213, 94, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _px(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x) * CELL, float(y) * CELL) for x, y in np.asarray(points, np.float64)]


def maze_image(maze: Maze) -> Image.Image:
    """The layout: walls dark, floor white with a faint cell grid."""
    rows, cols = maze.shape
    image = Image.new("RGB", (cols * CELL, rows * CELL), FLOOR)
    draw = ImageDraw.Draw(image)
    for k in range(1, cols):
        draw.line([(k * CELL, 0), (k * CELL, rows * CELL)], fill=GRID)
    for k in range(1, rows):
        draw.line([(0, k * CELL), (cols * CELL, k * CELL)], fill=GRID)
    for x_lo, y_lo, x_hi, y_hi in maze.boxes:
        draw.rectangle([x_lo * CELL, y_lo * CELL, x_hi * CELL - 1, y_hi * CELL - 1], fill=WALL)
    return image


def _ends(draw: ImageDraw.ImageDraw, start: np.ndarray | None, goal: np.ndarray | None) -> None:
    r = CELL * 0.16
    if start is not None:
        (x, y), = _px(np.asarray(start)[None])
        draw.ellipse([x - r, y - r, x + r, y + r], fill=START)
    if goal is not None:
        (x, y), = _px(np.asarray(goal)[None])
        draw.ellipse([x - 1.4 * r, y - 1.4 * r, x + 1.4 * r, y + 1.4 * r], outline=GOAL, width=max(3, CELL // 10))


def _cross(draw: ImageDraw.ImageDraw, at: tuple[float, float], colour: tuple[int, int, int]) -> None:
    x, y = at
    r = CELL * 0.22
    width = max(3, CELL // 12)
    draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=width)
    draw.line([(x - r, y + r), (x + r, y - r)], fill=colour, width=width)


def plans_picture(maze: Maze, plans: Sequence[np.ndarray] = (), collides: Sequence[bool] | None = None,
                  first_hits: Sequence[int] | None = None, start: np.ndarray | None = None,
                  goal: np.ndarray | None = None, estimates: Sequence[np.ndarray] = (),
                  label: str | None = None) -> np.ndarray:
    """uint8 (rows * CELL, cols * CELL, 3): the maze, ``plans`` (each (H, 2) in cell units) as polylines with
    waypoint dots, colliding ones in vermillion with their first offending segment crossed, ``estimates``
    (x0 estimates) in bluish green, the start and goal, and an optional label at the top left."""
    image = maze_image(maze)
    draw = ImageDraw.Draw(image)
    width = max(2, CELL // 16)
    for estimate in estimates:
        draw.line(_px(estimate), fill=ESTIMATE, width=width, joint="curve")
    collides = list(collides) if collides is not None else [False] * len(plans)
    first_hits = list(first_hits) if first_hits is not None else [-1] * len(plans)
    order = sorted(range(len(plans)), key=lambda i: not collides[i])  # clear plans on top
    for i in order:
        points = _px(np.clip(plans[i], -1, max(maze.shape) + 1))
        colour = COLLIDES if collides[i] else CLEAR
        draw.line(points, fill=colour, width=width, joint="curve")
        dot = max(2, CELL // 24)
        for x, y in points[1:-1]:
            draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=colour)
        if collides[i] and 0 <= first_hits[i] < len(points) - 1:
            (x0, y0), (x1, y1) = points[first_hits[i]], points[first_hits[i] + 1]
            _cross(draw, ((x0 + x1) / 2, (y0 + y1) / 2), COLLIDES)
    _ends(draw, start, goal)
    if label:  # at the bottom left: the app's image label covers the top left
        font = _font(max(18, CELL // 2))
        at = (8, image.height - CELL // 2 - 14)
        box = draw.textbbox(at, label, font=font)
        draw.rectangle([box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3], fill=(255, 255, 255))
        draw.text(at, label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def noise_picture(eps: np.ndarray, height: int, width: int = 420, limit: float = 3.0) -> np.ndarray:
    """uint8 (height, width, 3): a predicted noise eps (H, 2) as two curves against the waypoint index,
    x in blue and y in vermillion (dashed), on a [-limit, limit] axis with lines at 0 and +-1."""
    image = Image.new("RGB", (width, height), FLOOR)
    draw = ImageDraw.Draw(image)
    font = _font(20)
    left, right, top, bottom = 44, width - 12, 40, height - 76

    def y_px(v: float) -> float:
        return top + (limit - np.clip(v, -limit, limit)) / (2 * limit) * (bottom - top)

    for level in (-2, -1, 0, 1, 2):
        draw.line([(left, y_px(level)), (right, y_px(level))], fill=(150, 150, 150) if level == 0 else GRID, width=1)
        draw.text((6, y_px(level) - 11), f"{level:+d}" if level else "0", fill=(60, 60, 60), font=font)
    n = len(eps)
    xs = left + np.arange(n) / max(1, n - 1) * (right - left)
    for k, colour in ((0, NOISE_X), (1, NOISE_Y)):
        points = [(float(x), float(y_px(v))) for x, v in zip(xs, eps[:, k])]
        if k == 0:
            draw.line(points, fill=colour, width=3)
        else:  # dashed, so the two differ without colour
            for a in range(0, n - 1, 2):
                draw.line(points[a:a + 2], fill=colour, width=3)
    draw.text((left, bottom + 6), "waypoint 0", fill=(60, 60, 60), font=font)
    draw.text((right - 110, bottom + 6), f"waypoint {n - 1}", fill=(60, 60, 60), font=font)
    draw.text((left, bottom + 38), "predicted noise: x solid, y dashed", fill=(0, 0, 0), font=font)
    return np.asarray(image)


def step_picture(maze: Maze, x_t: np.ndarray, eps: np.ndarray, x0: np.ndarray, start: np.ndarray,
                 goal: np.ndarray, t: float) -> np.ndarray:
    """One step of one plan, side by side: x_t over the maze, the predicted noise as curves, the predicted x0
    over the maze (cell units; eps in normalised units)."""
    left = plans_picture(maze, [x_t], start=start, goal=goal, label=f"x_t, t = {t:.0f}")
    right = plans_picture(maze, [], start=start, goal=goal, estimates=[x0], label="predicted x0")
    middle = noise_picture(eps, left.shape[0])
    gap = np.full((left.shape[0], 12, 3), 255, np.uint8)
    return np.concatenate([left, gap, middle, gap, right], 1)
