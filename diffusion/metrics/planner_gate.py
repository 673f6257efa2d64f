"""The planner's gate: plans for held-out start-goal pairs, judged by the maze validator.

    python -m diffusion.metrics.planner_gate [--folder assets/planner-mazes] [--pairs 200]

For each layout, ``pairs`` random start-goal pairs from the held-out cell pairs (never joined by a training
path; at least :data:`~diffusion.data.mazes.MIN_GATE_DISTANCE` grid steps apart), one plan each. A plan
succeeds when none of its segments meets a wall (as drawn) and it ends within
:data:`~diffusion.data.mazes.GOAL_RADIUS` of the goal. Inpainting writes the goal into the last waypoint,
so reaching it is by construction; collisions, and the length against the exact shortest path (visibility
graph), are what the network decides. The straight line from start to goal is the baseline.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffusion.data.mazes import (
    MIN_GATE_DISTANCE,
    check_plan,
    draw_endpoints,
    layout_index,
    maze,
    shortest_length,
)
from diffusion.metrics.cards import CardMetric, CardTask, provenance, write_results
from diffusion.planner.model import Planner, to_cells

logger = logging.getLogger(__name__)

GATE_SEED = 2027  # the fixed held-out pairs
TARGETS = {"success": 0.90, "length_ratio": 1.3}
STEP_SWEEP = (("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddpm", 100))


@dataclass(frozen=True)
class GateRow:
    """One layout at one sampler setting: rates in [0, 1], ``length_ratio`` the mean over the successful
    plans of plan length / shortest path length, ``straight_collides`` the baseline's collision rate."""

    layout: str
    sampler: str
    steps: int
    pairs: int
    success: float
    collides: float
    reaches: float
    length_ratio: float
    straight_collides: float
    wall_s: float

    def line(self) -> str:
        return (f"{self.layout:8s} {self.sampler}-{self.steps:<3d} success {self.success:.3f} collides "
                f"{self.collides:.3f} reaches {self.reaches:.3f} length/shortest {self.length_ratio:.3f} "
                f"(straight line collides {self.straight_collides:.3f}; {self.pairs} pairs, {self.wall_s:.1f} s)")


def gate_pairs(layout: str, n: int, seed: int = GATE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (starts, goals) (n, 2) in cell units from the held-out cell pairs."""
    g = torch.Generator().manual_seed(seed * 100 + layout_index(layout))
    ends = [draw_endpoints(layout, g, held_out=True, min_distance=MIN_GATE_DISTANCE) for _ in range(n)]
    return np.array([e[0] for e in ends]), np.array([e[1] for e in ends])


def plan_batch(planner: Planner, layout: str, starts: np.ndarray, goals: np.ndarray, sampler: str, steps: int,
               seed: int = 0) -> np.ndarray:
    """One plan per (start, goal), all in one batch: (n, H, 2) in cell units."""
    g = torch.Generator().manual_seed(seed)
    *_, last = planner.steps(layout, starts, goals, len(starts), sampler, steps, g)
    return to_cells(layout, last.prev_sample)


def judge(layout: str, plans: np.ndarray, starts: np.ndarray, goals: np.ndarray) -> dict[str, float]:
    """Success, collision and goal rates, and the mean length ratio of the successes."""
    checks = [check_plan(layout, p, s, g) for p, s, g in zip(plans, starts, goals)]
    ratios = [c.length / shortest_length(layout, s, g) for c, s, g in zip(checks, starts, goals) if c.success]
    m = maze(layout)
    straight = m.segments_hit(starts, goals)
    return {"success": float(np.mean([c.success for c in checks])),
            "collides": float(np.mean([c.collides for c in checks])),
            "reaches": float(np.mean([c.reaches for c in checks])),
            "length_ratio": float(np.mean(ratios)) if ratios else float("nan"),
            "straight_collides": float(straight.mean())}


def run_gate(planner: Planner, pairs: int = 200, sampler: str = "ddim", steps: int = 20, seed: int = 0,
             layouts: tuple[str, ...] | None = None) -> list[GateRow]:
    """The gate for every layout the planner knows, at one sampler setting."""
    rows = []
    with torch.inference_mode():
        for layout in layouts or planner.layouts:
            starts, goals = gate_pairs(layout, pairs)
            began = time.perf_counter()
            plans = plan_batch(planner, layout, starts, goals, sampler, steps, seed)
            wall = time.perf_counter() - began
            rows.append(GateRow(layout, sampler, steps, pairs, wall_s=wall, **judge(layout, plans, starts, goals)))
    return rows


def parser() -> argparse.ArgumentParser:
    """The command line of ``diffusion-classroom-gate-planner`` (``python -m diffusion.metrics.planner_gate``)."""
    from diffusion import __version__
    from diffusion.registry import ASSETS

    p = argparse.ArgumentParser(prog="diffusion-classroom-gate-planner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--folder", type=Path, default=ASSETS / "planner-mazes",
                   help="the planner's folder (default: the shipped planner-mazes)")
    p.add_argument("--pairs", type=int, default=200, help="start and goal pairs to plan (default 200)")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="also report success against the sampler and its number of steps")
    p.add_argument("--write", action="store_true",
                   help="also write the figures to FOLDER/gate_results.json (which the docs quote) and into the "
                        "card's model-index")
    return p


#: The app's setting (the Planner tab's default), whose rows the card shows.
CARD_SETTING = ("ddim", 20)
CARD_TASK = CardTask("trajectory-planning", "mazes", "held-out start-goal pairs (diffusion/data/mazes.py)")


def results_record(rows: list[GateRow]) -> dict:
    """Every row as plain JSON: ``{layout: {"ddim-20": {success, collides, ...}}}``."""
    by_layout: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        figures = {k: round(getattr(row, k), 4) for k in ("success", "collides", "reaches", "length_ratio",
                                                           "straight_collides", "wall_s")}
        by_layout.setdefault(row.layout, {})[f"{row.sampler}-{row.steps}"] = figures | {"pairs": row.pairs}
    return {"model": "planner-mazes", **provenance("diffusion-classroom-gate-planner --write"),
            "targets": TARGETS, "layouts": by_layout}


def card_metrics(record: dict) -> list[CardMetric]:
    setting = f"{CARD_SETTING[0]}-{CARD_SETTING[1]}"
    out = []
    for layout in record["layouts"]:
        out.append(CardMetric(f"layouts.{layout}.{setting}.success", f"{layout}: plans clear of walls, ending at the goal"))
        out.append(CardMetric(f"layouts.{layout}.{setting}.length_ratio",
                              f"{layout}: plan length / shortest path (successful plans)", "length_ratio"))
    return out


def main(argv: list[str] | None = None) -> None:
    """The console script ``diffusion-classroom-gate-planner``: plan, judge, print one line per setting."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    planner = Planner.from_folder(args.folder)
    settings = STEP_SWEEP if args.sweep else (("ddim", 20),)
    rows = []
    for sampler, steps in settings:
        for row in run_gate(planner, args.pairs, sampler, steps):
            print(row.line(), flush=True)
            rows.append(row)
    if args.write:
        record = results_record(rows)
        target = write_results(args.folder, record, CARD_TASK, card_metrics(record),
                               {"sampler": CARD_SETTING[0], "steps": CARD_SETTING[1], "pairs": args.pairs})
        print(f"Wrote {target} and the model-index of {args.folder / 'README.md'}")


if __name__ == "__main__":
    main()
