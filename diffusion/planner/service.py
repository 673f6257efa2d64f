"""The planner's entry points, reached through the Studio (``studio.planner``), in plain values.

Planning is a generator that advances one denoising step at a time through the Studio's compute gate, each
step carrying its progress for the fair runner, like every other model request. A finished run travels as a
:class:`PlanRun` (numpy arrays and the validator's verdicts): the UI keeps it in the user's session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from diffusion.data.mazes import (
    CLEARANCE,
    LAYOUT_NAMES,
    PlanCheck,
    check_plan,
    maze,
    shortest_length,
)
from diffusion.data.maze_routes import count_routes
from diffusion.loop import StepGate, predicted_noise, record_progress
from diffusion.planner.model import Planner, fix_ends, known_ends, to_cells
from diffusion.planner.pictures import plans_picture, step_picture
from diffusion.registry import ASSETS
from diffusion.request import MAX_SEED, real_number, whole_number

logger = logging.getLogger(__name__)

PLANNER_FOLDER = ASSETS / "planner-mazes"
MAX_PLANS = 32
PLANNER_SAMPLERS = ("ddim", "ddpm", "dpmpp-2m")
LAYOUT_TITLES = {"u-maze": "U-maze", "medium": "Medium maze (a loop)", "pillars": "Open room with pillars"}


@dataclass
class PlanRun:
    """``n`` plans for one start and goal, with every step kept. Positions are in cell units: ``x_t``
    (S + 1, n, H, 2) from the starting noise x_T to the final plans, ``pred_x0`` (S, n, H, 2) the model's
    estimate at each step; ``eps`` (S, n, H, 2) the predicted noise in the model's normalised units;
    ``timesteps`` and ``alpha_bar`` (S,). ``checks`` judge the final plans; ``shortest`` is the length of the
    shortest clear path and ``straight_collides`` tells whether the straight line meets a wall."""

    layout: str
    start: np.ndarray
    goal: np.ndarray
    sampler: str
    x_t: np.ndarray
    pred_x0: np.ndarray
    eps: np.ndarray
    timesteps: np.ndarray
    alpha_bar: np.ndarray
    checks: list[PlanCheck]
    shortest: float
    straight_collides: bool
    wall_s: float
    prediction_type: str = "sample"  # what the network predicts: the clean plan ("sample") or the noise

    @property
    def nbytes(self) -> int:
        return self.x_t.nbytes + self.pred_x0.nbytes + self.eps.nbytes

    @property
    def plans(self) -> np.ndarray:
        return self.x_t[-1]

    @property
    def routes(self) -> int:
        """How many different routes the clear plans take: which side of each free-standing obstacle they pass
        (:func:`diffusion.data.maze_routes.count_routes`)."""
        return count_routes(self.layout, [p for p, c in zip(self.plans, self.checks) if c.success])


@dataclass
class PlanProgress:
    """A planning run in progress: ``done`` of ``total`` steps; ``run`` once it is finished."""

    done: int
    total: int
    run: PlanRun | None = None


class PlannerDesk:
    """Plan in the mazes with the shipped planner; every denoising step passes ``gate``."""

    def __init__(self, gate: StepGate, folder: Path = PLANNER_FOLDER):
        self.gate = gate
        self.folder = Path(folder)
        self._planner: Planner | None = None
        self._lock = threading.Lock()

    @property
    def planner(self) -> Planner:
        """The planner, loaded once on first use (read-only afterwards, shared by all requests)."""
        with self._lock:
            if self._planner is None:
                self._planner = Planner.from_folder(self.folder)
                logger.info("planner loaded from %s (%s)", self.folder, ", ".join(self._planner.layouts))
            return self._planner

    def layout(self, name: object) -> str:
        if name not in LAYOUT_NAMES:
            raise ValueError(f"choose a layout: {', '.join(LAYOUT_NAMES)}; got {name!r}")
        return str(name)

    def endpoint(self, layout: object, x: object, y: object, what: str = "start") -> np.ndarray:
        """A start or goal (x, y) in cell units, checked: inside the maze, in a free cell, then moved into that
        cell's central part (at least the training clearance from any wall, as the planner learned)."""
        m = maze(self.layout(layout))
        rows, cols = m.shape
        px = real_number(x, f"{what} x", 0.0, float(cols))
        py = real_number(y, f"{what} y", 0.0, float(rows))
        r, c = min(int(py), rows - 1), min(int(px), cols - 1)
        if m.walls[r, c]:
            raise ValueError(f"the {what} ({px:.2f}, {py:.2f}) is inside a wall: choose a free (white) cell")
        return np.array([np.clip(px, c + CLEARANCE, c + 1 - CLEARANCE), np.clip(py, r + CLEARANCE, r + 1 - CLEARANCE)])

    def picture(self, layout: object, start: np.ndarray | None = None, goal: np.ndarray | None = None) -> np.ndarray:
        """The maze with the start and goal marked (uint8)."""
        return plans_picture(maze(self.layout(layout)), start=start, goal=goal)

    def _request(self, sampler: object, steps: object, n: object, seed: object) -> tuple[str, int, int, int]:
        if sampler not in PLANNER_SAMPLERS:
            raise ValueError(f"the planner samples with {', '.join(PLANNER_SAMPLERS)}; got {sampler!r}")
        T = int(self.planner.scheduler_config["num_train_timesteps"])
        return (str(sampler), whole_number(steps, "Steps", 1, T), whole_number(n, "Plans", 1, MAX_PLANS),
                whole_number(seed, "Seed", 0, MAX_SEED))

    def plan(self, layout: object, start: np.ndarray, goal: np.ndarray, n: object = 8, sampler: object = "ddim",
             steps: object = 20, seed: object = 0) -> Iterator[PlanProgress]:
        """``n`` plans from ``start`` to ``goal`` (checked with :meth:`endpoint`) through the one loop, one step
        at a time; the last update carries the :class:`PlanRun`."""
        layout = self.layout(layout)
        sampler, steps, n, seed = self._request(sampler, steps, n, seed)
        planner = self.planner  # loaded here, when called: the iterator only runs the model
        return self._plan(planner, layout, start, goal, n, sampler, steps, seed)

    def _plan(self, planner: Planner, layout: str, start: np.ndarray, goal: np.ndarray, n: int, sampler: str,
              steps: int, seed: int) -> Iterator[PlanProgress]:
        """:meth:`plan`'s run, of a checked request."""
        start, goal = np.asarray(start, np.float64), np.asarray(goal, np.float64)
        g = torch.Generator().manual_seed(seed)
        records = planner.steps(layout, start, goal, n, sampler, steps, g)
        scheduler = DDPMScheduler.from_config(planner.scheduler_config)  # its alpha-bar, for eps from any prediction
        began = time.perf_counter()
        x_t, pred_x0, eps, ts = [], [], [], []
        ends = known_ends(layout, start, goal, n)
        for record in self.gate.steps(records, progress=record_progress):
            if not x_t:
                x_t.append(to_cells(layout, record.sample))
            x_t.append(to_cells(layout, record.prev_sample))
            # the ends are known states: the network's output there is never trained (nor used), so the estimate
            # shown takes the known start and goal, and the noise shown is the one it implies
            x0 = fix_ends(record.pred_original_sample, *ends)
            pred_x0.append(to_cells(layout, x0))
            output = x0 if scheduler.config.prediction_type == "sample" else record.model_output
            noise = predicted_noise(scheduler, record.model_input, output, int(round(record.timestep)))
            eps.append(np.swapaxes(noise.float().numpy(), -1, -2))
            ts.append(record.timestep)
            if not record.is_last:
                yield PlanProgress(record.index + 1, record.num_steps)
        alphas = scheduler.alphas_cumprod.numpy()
        final = x_t[-1]
        checks = [check_plan(layout, p, start, goal) for p in final]
        run = PlanRun(layout, start, goal, sampler, np.stack(x_t).astype(np.float32),
                      np.stack(pred_x0).astype(np.float32), np.stack(eps).astype(np.float32),
                      np.array(ts, np.float32), alphas[np.array(ts, int)].astype(np.float32), checks,
                      shortest_length(layout, start, goal), bool(maze(layout).segments_hit(start[None], goal[None])[0]),
                      time.perf_counter() - began, str(scheduler.config.prediction_type))
        yield PlanProgress(len(ts), len(ts), run)

    def final_picture(self, run: PlanRun) -> np.ndarray:
        """All plans over the maze, colliding ones in vermillion with their first offending segment crossed."""
        return plans_picture(maze(run.layout), list(run.plans), [c.collides for c in run.checks],
                             [c.first_hit for c in run.checks], run.start, run.goal)

    def frame_picture(self, run: PlanRun, index: int) -> np.ndarray:
        """Frame ``index`` (0: the starting noise, S: the final plans) of all plans, with the model's x0
        estimates of that step."""
        index = whole_number(index, "Frame", 0, len(run.x_t) - 1)
        steps = len(run.timesteps)
        estimates = list(run.pred_x0[index]) if index < steps else []
        label = f"x_t at t = {run.timesteps[index]:.0f}" if index < steps else "final plans"
        return plans_picture(maze(run.layout), list(run.x_t[index]), start=run.start, goal=run.goal,
                             estimates=estimates, label=label)

    def step_picture(self, run: PlanRun, index: int, which: int = 0) -> np.ndarray:
        """Step ``index`` of plan ``which``: x_t, the predicted noise and the predicted x0, side by side."""
        index = whole_number(index, "Step", 0, len(run.timesteps) - 1)
        which = whole_number(which, "Plan", 0, run.x_t.shape[1] - 1)
        return step_picture(maze(run.layout), run.x_t[index, which], run.eps[index, which],
                            run.pred_x0[index, which], run.start, run.goal, float(run.timesteps[index]))

    def animation_frames(self, run: PlanRun) -> list[np.ndarray]:
        """The reverse process as pictures, one per step, the final plans held for a moment."""
        frames = [self.frame_picture(run, i) for i in range(len(run.x_t))]
        return frames + [self.final_picture(run)] * 8

