"""Routes in a maze: which way round the obstacles a path goes (homotopy classes, for the planner's gate and its
"how many routes" count). Uses the mazes of :mod:`diffusion.data.mazes`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from diffusion.data.mazes import maze


@lru_cache(maxsize=None)
def holes(name: str) -> np.ndarray:
    """One point inside each obstacle that stands free of the outer wall (k, 2): the holes of the free space.
    Two clear paths with the same ends take the same route (are homotopic) exactly when they pass every hole
    on the same side."""
    m = maze(name)
    labels, count = ndimage.label(m.walls)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    points = []
    for k in range(1, count + 1):
        if k not in border:
            r, c = np.argwhere(labels == k)[0]
            points.append((c + 0.5, r + 0.5))
    return np.array(points, np.float64).reshape(-1, 2)


def swept_angles(name: str, path: np.ndarray) -> np.ndarray:
    """The angle (radians) that ``path`` (n, 2) sweeps as seen from each hole (k,)."""
    centres = holes(name)
    if not len(centres):
        return np.zeros(0)
    rel = np.asarray(path, np.float64)[None] - centres[:, None]
    angle = np.arctan2(rel[..., 1], rel[..., 0])
    step = np.diff(angle, axis=1)
    return ((step + np.pi) % (2 * np.pi) - np.pi).sum(1)


def count_routes(name: str, paths: list[np.ndarray]) -> int:
    """How many different routes (homotopy classes) the clear ``paths`` with common ends take: two paths take
    the same route when every hole sees them sweep angles less than pi apart."""
    routes: list[np.ndarray] = []
    for path in paths:
        angles = swept_angles(name, path)
        if not any(np.all(np.abs(angles - r) < np.pi) for r in routes):
            routes.append(angles)
    return len(routes)
