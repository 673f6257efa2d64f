"""Mazes for the trajectory planner (Janner et al. 2022, "Planning with Diffusion"): the world, its
training paths and the validator that judges a plan (routes round the obstacles: :mod:`diffusion.data.maze_routes`).

A maze is a grid of square cells, ``#`` a wall and ``.`` free, with the outer border walled. Points are
continuous (x, y) in cell units: cell (row r, column c) covers [c, c + 1] x [r, r + 1], y grows
downwards as in the pictures. A point agent moves along straight segments between consecutive
waypoints; a plan collides when one of its segments meets a wall (the validator's ``margin`` inflates
the walls, 0 for the walls as drawn).

Training paths (:func:`training_path`) join a random start and goal (uniform in their cells' central
part) by a breadth-first shortest path on the 4-connected grid, choosing uniformly among the
equally short next cells (so a room of pillars gives many different routes), then pull the string
taut (drop every waypoint the previous kept one can see past, with :data:`CLEARANCE` from the walls) and
resample it to ``horizon`` waypoints evenly spaced along its length. The exact shortest path for a point
agent, the length baseline of the gate, comes from the visibility graph of the wall corners
(:func:`shortest_length`). Every random number comes from the caller's seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import torch
from scipy.sparse.csgraph import dijkstra

HORIZON = 64  # waypoints per plan
CLEARANCE = 0.25  # training paths keep this far (cells) from every wall
START_SPAN = 0.4  # starts and goals are uniform in the central START_SPAN x START_SPAN of their cell
GOAL_RADIUS = 0.25  # a plan reaches its goal when it ends within this many cells of it
SEAM = 1e-6  # walls are inflated by this much more than asked, so no path slips along the seam of two wall cells

LAYOUTS: dict[str, tuple[str, ...]] = {
    # A wall juts in from the left: one route, around it.
    "u-maze": (
        "#########",
        "#.......#",
        "#.......#",
        "######..#",
        "######..#",
        "######..#",
        "#.......#",
        "#.......#",
        "#########",
    ),
    # Corridors one cell wide with a loop, so some pairs have two routes.
    "medium": (
        "#########",
        "#...#...#",
        "#.#.#.#.#",
        "#.#...#.#",
        "#.###.#.#",
        "#.....#.#",
        "###.###.#",
        "#.......#",
        "#########",
    ),
    # An open room with four pillars: routes on either side of each, often equally short. (A lattice of nine
    # pillars, one cell apart, was a maze of one-cell corridors: the planner reached 47% clear plans there.)
    "pillars": (
        "#########",
        "#.......#",
        "#.......#",
        "#..#.#..#",
        "#.......#",
        "#..#.#..#",
        "#.......#",
        "#.......#",
        "#########",
    ),
}
LAYOUT_NAMES = tuple(LAYOUTS)


def layout_fingerprint(names: tuple[str, ...] | list[str]) -> str:
    """A short hash of the layouts' drawings: a cache of paths made for other walls is never reused."""
    import hashlib

    return hashlib.sha256("\n\n".join("\n".join(LAYOUTS[n]) for n in names).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Maze:
    """One layout: ``walls`` (rows, cols) bool, True for a wall cell."""

    name: str
    walls: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.walls.shape  # type: ignore[return-value]

    @cached_property
    def boxes(self) -> np.ndarray:
        """The wall cells as boxes (k, 4): x_lo, y_lo, x_hi, y_hi in cell units."""
        rows, cols = np.nonzero(self.walls)
        return np.stack([cols, rows, cols + 1, rows + 1], 1).astype(np.float64)

    @cached_property
    def free_cells(self) -> list[tuple[int, int]]:
        """The free cells as (row, col), row-major."""
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(~self.walls))]

    def is_free(self, cell: tuple[int, int]) -> bool:
        r, c = cell
        return 0 <= r < self.shape[0] and 0 <= c < self.shape[1] and not self.walls[r, c]

    def cell_of(self, point: np.ndarray) -> tuple[int, int]:
        """The cell (row, col) that holds ``point`` (x, y)."""
        return int(np.floor(point[1])), int(np.floor(point[0]))

    def bfs_distances(self, goal: tuple[int, int]) -> np.ndarray:
        """Steps from every cell to ``goal`` on the 4-connected free grid (-1 where unreachable)."""
        dist = np.full(self.shape, -1, np.int64)
        dist[goal] = 0
        queue = deque([goal])
        while queue:
            r, c = queue.popleft()
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nxt = (r + dr, c + dc)
                if self.is_free(nxt) and dist[nxt] < 0:
                    dist[nxt] = dist[r, c] + 1
                    queue.append(nxt)
        return dist

    def grid_distance(self, a: tuple[int, int], b: tuple[int, int]) -> int:
        return int(_distances(self.name)[b][a])

    # --- geometry -------------------------------------------------------------------------------
    def segments_hit(self, a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which segments a[i] -> b[i] (n, 2) meet a wall inflated by ``margin`` (n,) bool.

        The slab test (Kay & Kajiya 1986) of every segment against every wall box at once; touching a
        box's boundary counts as a hit only with a positive overlap of the parameter interval, and every
        box is inflated by :data:`SEAM` more so that two wall cells side by side leave no seam between them.
        """
        margin = margin + SEAM
        a = np.asarray(a, np.float64).reshape(-1, 1, 2)
        d = np.asarray(b, np.float64).reshape(-1, 1, 2) - a
        lo = self.boxes[None, :, :2] - margin
        hi = self.boxes[None, :, 2:] + margin
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (lo - a) / d
            t2 = (hi - a) / d
        flat = np.abs(d) < 1e-12  # a segment parallel to an axis: inside that slab or never
        inside = (a > lo) & (a < hi)
        t_near = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
        t_far = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
        enter = np.maximum(t_near.max(-1), 0.0)
        leave = np.minimum(t_far.min(-1), 1.0)
        return (leave - enter > 1e-9).any(-1)

    def points_in_wall(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which points (n, 2) lie strictly inside a wall inflated by ``margin`` (n,) bool."""
        p = np.asarray(points, np.float64).reshape(-1, 1, 2)
        margin = margin + SEAM
        return ((p > self.boxes[None, :, :2] - margin) & (p < self.boxes[None, :, 2:] + margin)).all(-1).any(-1)

    # --- normalisation: the model sees [-1, 1]^2 -------------------------------------------------
    def normalise(self, points: np.ndarray) -> np.ndarray:
        """Cell units -> [-1, 1] (x by the width, y by the height)."""
        size = np.array([self.shape[1], self.shape[0]], np.float64)
        return 2 * np.asarray(points, np.float64) / size - 1

    def denormalise(self, points: np.ndarray) -> np.ndarray:
        size = np.array([self.shape[1], self.shape[0]], np.float64)
        return (np.asarray(points, np.float64) + 1) * size / 2


@lru_cache(maxsize=None)
def maze(name: str) -> Maze:
    """The layout ``name`` (one of :data:`LAYOUT_NAMES`)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUT_NAMES)}")
    rows = LAYOUTS[name]
    return Maze(name, np.array([[ch == "#" for ch in row] for row in rows]))


@lru_cache(maxsize=None)
def _distances(name: str) -> dict[tuple[int, int], np.ndarray]:
    m = maze(name)
    return {cell: m.bfs_distances(cell) for cell in m.free_cells}


def layout_index(name: str) -> int:
    maze(name)
    return LAYOUT_NAMES.index(name)


# --- pairs: which (start cell, goal cell) pairs are kept out of training -------------------------
HELD_OUT_SHARE = 0.1
MIN_GATE_DISTANCE = 3  # gate pairs are at least this many grid steps apart


@lru_cache(maxsize=None)
def cell_pairs(name: str) -> tuple[tuple[tuple[tuple[int, int], tuple[int, int]], ...],
                                   tuple[tuple[tuple[int, int], tuple[int, int]], ...]]:
    """(training pairs, held-out pairs) of distinct free cells, ordered (start, goal). A fixed
    :data:`HELD_OUT_SHARE` of the unordered pairs (seed 1234) is held out in both directions: the planner
    never sees a path joining those two cells."""
    cells = maze(name).free_cells
    unordered = list(itertools.combinations(cells, 2))
    g = torch.Generator().manual_seed(1234 + layout_index(name))
    order = torch.randperm(len(unordered), generator=g).tolist()
    k = int(round(HELD_OUT_SHARE * len(unordered)))
    held = {unordered[i] for i in order[:k]}
    train, out = [], []
    for a, b in unordered:
        (out if (a, b) in held else train).extend([(a, b), (b, a)])
    return tuple(train), tuple(out)


def _point_in(cell: tuple[int, int], g: torch.Generator) -> np.ndarray:
    u = torch.rand(2, generator=g, dtype=torch.float64).numpy()
    return np.array([cell[1], cell[0]], np.float64) + 0.5 + START_SPAN * (u - 0.5)


def draw_endpoints(name: str, g: torch.Generator, held_out: bool = False,
                   min_distance: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A random (start, goal) in cell units from a training pair (or a held-out one) at least
    ``min_distance`` grid steps apart."""
    train, out = cell_pairs(name)
    pairs = out if held_out else train
    m = maze(name)
    pairs = [p for p in pairs if m.grid_distance(*p) >= min_distance]
    a, b = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
    return _point_in(a, g), _point_in(b, g)


# --- paths ---------------------------------------------------------------------------------------
JITTER = 0.05  # training paths: every visibility edge's length is scaled by 1 + U(0, JITTER)


def resample(polyline: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """``horizon`` points evenly spaced along the polyline (n, 2) by arc length, both ends kept."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(polyline[:1], horizon, 0)
    at = np.linspace(0, s[-1], horizon)
    return np.stack([np.interp(at, s, polyline[:, k]) for k in range(2)], 1)


def path_length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(np.asarray(path, np.float64), axis=0), axis=1).sum())


@lru_cache(maxsize=None)
def _corner_graph(name: str, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The visibility graph of the (inflated) wall corners: nodes (k, 2) and edge lengths (k, k), inf
    where two corners cannot see each other."""
    m = maze(name)
    out = margin + 2 * SEAM  # just outside the inflated box, so a corner sees along its walls
    corners = {(float(x), float(y)) for x_lo, y_lo, x_hi, y_hi in m.boxes
               for x in (x_lo - out, x_hi + out) for y in (y_lo - out, y_hi + out)}
    nodes = np.array(sorted(corners))
    nodes = nodes[~m.points_in_wall(nodes, margin)]
    rows, cols = m.shape
    nodes = nodes[(nodes[:, 0] > 0) & (nodes[:, 0] < cols) & (nodes[:, 1] > 0) & (nodes[:, 1] < rows)]
    i, j = np.triu_indices(len(nodes), 1)
    hit = m.segments_hit(nodes[i], nodes[j], margin)
    weights = np.full((len(nodes), len(nodes)), np.inf)
    length = np.linalg.norm(nodes[i] - nodes[j], axis=1)
    weights[i[~hit], j[~hit]] = length[~hit]
    weights[j[~hit], i[~hit]] = length[~hit]
    return nodes, weights


def clear_path(name: str, start: np.ndarray, goal: np.ndarray, margin: float = 0.0,
               generator: torch.Generator | None = None, jitter: float = 0.0) -> np.ndarray:
    """The shortest polyline (n, 2) from ``start`` to ``goal`` (cell units) that keeps ``margin`` from every
    wall: Dijkstra on the visibility graph of the inflated wall corners (exact for a point among boxes:
    a shortest path bends only at corners). With ``jitter`` every edge length is scaled by 1 + U(0, jitter)
    from ``generator``: a near-shortest path, and between routes of equal length (a room of pillars) a
    random one. ``ValueError`` when there is none."""
    m = maze(name)
    start, goal = np.asarray(start, np.float64), np.asarray(goal, np.float64)
    if m.points_in_wall(np.stack([start, goal]), margin).any():
        raise ValueError(f"start and goal must be at least {margin:g} cells clear of the walls")
    if jitter == 0 and not m.segments_hit(start[None], goal[None], margin)[0]:
        return np.stack([start, goal])
    nodes, corner_w = _corner_graph(name, margin)
    k = len(nodes)
    points = np.concatenate([nodes, start[None], goal[None]])
    w = np.full((k + 2, k + 2), np.inf)
    w[:k, :k] = corner_w
    for index in (k, k + 1):
        others = np.delete(np.arange(k + 2), index)
        seen = ~m.segments_hit(np.repeat(points[index][None], k + 1, 0), points[others], margin)
        w[index, others] = np.where(seen, np.linalg.norm(points[others] - points[index], axis=1), np.inf)
        w[others, index] = w[index, others]
    if jitter:
        u = torch.rand(k + 2, k + 2, generator=generator, dtype=torch.float64).numpy()
        u = np.triu(u, 1)
        w = w * (1 + jitter * (u + u.T))
    graph = np.where(np.isfinite(w), w, 0.0)  # csgraph reads 0 as "no edge"
    dist, pred = dijkstra(graph, directed=False, indices=k, return_predecessors=True)
    if not np.isfinite(dist[k + 1]):
        raise ValueError(f"no clear path from {start} to {goal} in {name}")
    order = [k + 1]
    while order[-1] != k:
        order.append(int(pred[order[-1]]))
    return points[order[::-1]]


def shortest_length(name: str, start: np.ndarray, goal: np.ndarray, margin: float = 0.0) -> float:
    """The length of the shortest clear path (:func:`clear_path`), the gate's baseline (``margin`` 0: the
    walls as drawn)."""
    return path_length(clear_path(name, start, goal, margin))


def training_path(name: str, start: np.ndarray, goal: np.ndarray, g: torch.Generator,
                  horizon: int = HORIZON) -> np.ndarray:
    """A clear path (horizon, 2) in cell units from ``start`` to ``goal``: a near-shortest path that keeps
    :data:`CLEARANCE` from the walls (:func:`clear_path` with :data:`JITTER`), resampled to ``horizon``
    waypoints evenly spaced along it."""
    return resample(clear_path(name, start, goal, CLEARANCE, g, JITTER), horizon)


def training_set(name: str, n: int, seed: int, horizon: int = HORIZON) -> np.ndarray:
    """``n`` training paths (n, horizon, 2) in cell units, from training pairs only."""
    g = torch.Generator().manual_seed(seed)
    paths = np.empty((n, horizon, 2), np.float64)
    for i in range(n):
        start, goal = draw_endpoints(name, g)
        paths[i] = training_path(name, start, goal, g, horizon)
    return paths


# --- the validator ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanCheck:
    """A plan judged: ``collides`` with the first offending segment (``first_hit``, -1 if none),
    ``reaches`` the goal within the radius, its ``length`` and ``start_error``/``goal_error`` in cells."""

    collides: bool
    first_hit: int
    reaches: bool
    length: float
    start_error: float
    goal_error: float

    @property
    def success(self) -> bool:
        return not self.collides and self.reaches


def check_plan(name: str, plan: np.ndarray, start: np.ndarray, goal: np.ndarray, margin: float = 0.0,
               radius: float = GOAL_RADIUS) -> PlanCheck:
    """Judge ``plan`` (n, 2) in cell units: does any segment between consecutive waypoints meet a wall
    (inflated by ``margin``), does it start at ``start`` and end within ``radius`` of ``goal``."""
    m = maze(name)
    plan = np.asarray(plan, np.float64)
    if not np.isfinite(plan).all():
        return PlanCheck(True, 0, False, float("inf"), float("inf"), float("inf"))
    hits = m.segments_hit(plan[:-1], plan[1:], margin)
    start_error = float(np.linalg.norm(plan[0] - start))
    goal_error = float(np.linalg.norm(plan[-1] - goal))
    first = int(np.argmax(hits)) if hits.any() else -1
    return PlanCheck(bool(hits.any()), first, goal_error <= radius and start_error <= radius, path_length(plan),
                     start_error, goal_error)
