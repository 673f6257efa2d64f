"""The trajectory planner (Janner et al. 2022): the maze world and its validator, inpainting through the one
loop, reproducibility, the training script, and the shipped model's gate."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from diffusion.data import maze_routes, mazes
from diffusion.data.mazes import CLEARANCE, HORIZON, check_plan, maze, shortest_length
from diffusion.metrics.planner_gate import TARGETS, gate_pairs, run_gate
from diffusion.planner.model import Planner, build_scheduler, build_unet, fix_ends, to_cells
from diffusion.planner.service import PLANNER_FOLDER, PlannerDesk
from diffusion.gate import ComputeGate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_planner() -> Planner:
    torch.manual_seed(0)
    return Planner(build_unet(block_out_channels=(8, 16)).eval(), dict(build_scheduler(50).config),
                   mazes.LAYOUT_NAMES, HORIZON)


@pytest.fixture(scope="module")
def shipped() -> Planner:
    return Planner.from_folder(PLANNER_FOLDER)


# ----- the world -----
def test_layouts_are_walled_and_connected() -> None:
    for name in mazes.LAYOUT_NAMES:
        m = maze(name)
        assert m.walls[0].all() and m.walls[-1].all() and m.walls[:, 0].all() and m.walls[:, -1].all()
        reach = m.bfs_distances(m.free_cells[0])
        assert all(reach[c] >= 0 for c in m.free_cells), name


def test_validator_catches_a_path_through_a_wall() -> None:
    # U-maze: the wall fills rows 3-5 of columns 1-5; the straight line down from the top corridor crosses it
    through = np.linspace([1.5, 1.5], [1.5, 7.5], HORIZON)
    check = check_plan("u-maze", through, through[0], through[-1])
    assert check.collides and not check.success and check.reaches
    assert 15 <= check.first_hit <= 22  # the segment that first enters row 3 (y = 3)
    # a jump: every waypoint is in a free cell, but one segment leaps across the wall
    jump = np.concatenate([np.linspace([1.5, 1.5], [1.5, 2.5], 32), np.linspace([1.5, 6.5], [1.5, 7.5], 32)])
    assert not maze("u-maze").points_in_wall(jump).any()
    assert check_plan("u-maze", jump, jump[0], jump[-1]).first_hit == 31
    # along the seam between two wall cells (x = 3 between columns 2 and 3): no gap there
    seam = np.linspace([3.0, 2.5], [3.0, 6.5], HORIZON)
    assert check_plan("u-maze", seam, seam[0], seam[-1]).collides
    # the way around is clear; a plan that stops short does not reach the goal; NaN is a failure
    around = mazes.resample(np.array([[1.5, 1.5], [6.5, 1.5], [6.5, 7.5], [1.5, 7.5]]))
    assert check_plan("u-maze", around, around[0], around[-1]).success
    assert not check_plan("u-maze", around[:-5], around[0], around[-1]).reaches
    assert not check_plan("u-maze", np.full((HORIZON, 2), np.nan), around[0], around[-1]).success


def test_shortest_path_is_exact_on_a_known_case() -> None:
    # around the U-maze's wall end (x = 6, y from 3 to 6): two diagonals of sqrt(4.5^2 + 1.5^2) and 3 down
    expected = 2 * np.hypot(4.5, 1.5) + 3
    assert shortest_length("u-maze", np.array([1.5, 1.5]), np.array([1.5, 7.5])) == pytest.approx(expected, abs=1e-4)
    assert shortest_length("pillars", np.array([1.5, 1.5]), np.array([7.5, 1.5])) == pytest.approx(6.0)


def test_training_paths_are_clear_near_shortest_and_avoid_held_out_pairs() -> None:
    for name in mazes.LAYOUT_NAMES:
        paths = mazes.training_set(name, 60, seed=3)
        assert paths.shape == (60, HORIZON, 2)
        _, held_out = mazes.cell_pairs(name)
        m = maze(name)
        for p in paths:
            check = check_plan(name, p, p[0], p[-1], margin=0.2)  # clear of the walls with room to spare
            assert check.success, name
            assert check.length <= 1.4 * shortest_length(name, p[0], p[-1])
            assert (m.cell_of(p[0]), m.cell_of(p[-1])) not in held_out
    assert np.array_equal(mazes.training_set("pillars", 5, seed=3), mazes.training_set("pillars", 5, seed=3))


def test_routes_are_told_apart_by_the_side_of_each_obstacle() -> None:
    assert len(maze_routes.holes("u-maze")) == 0 and len(maze_routes.holes("medium")) == 2 and len(maze_routes.holes("pillars")) == 4
    start, goal = np.array([1.5, 1.5]), np.array([7.5, 7.5])
    # corner to corner past the pillars: two routes are equally short; training draws both
    g = torch.Generator().manual_seed(0)
    paths = [mazes.clear_path("pillars", start, goal, CLEARANCE, g, mazes.JITTER) for _ in range(20)]
    assert maze_routes.count_routes("pillars", paths) == 2
    over = np.array([[1.5, 1.5], [7.5, 1.5], [7.5, 7.5]])  # along the top wall, then down the right one
    under = np.array([[1.5, 1.5], [1.5, 7.5], [7.5, 7.5]])  # down the left wall, then along the bottom
    assert maze_routes.count_routes("pillars", [mazes.resample(over), mazes.resample(under)]) == 2
    wiggle = mazes.resample(over) + np.sin(np.linspace(0, 9, HORIZON))[:, None] * 0.2  # the same way round
    assert maze_routes.count_routes("pillars", [mazes.resample(over), wiggle]) == 1


# ----- inpainting through the one loop -----
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m"])
def test_inpainting_keeps_start_and_goal_exact_at_every_step(tiny_planner, sampler) -> None:
    start, goal = np.array([1.5, 1.5]), np.array([1.5, 7.5])
    m = maze("u-maze")
    s, g = (torch.tensor(m.normalise(p), dtype=torch.float32) for p in (start, goal))
    records = list(tiny_planner.steps("u-maze", start, goal, 3, sampler, 10, torch.Generator().manual_seed(0)))
    assert len(records) == 10
    for r in records:
        for x in (r.sample, r.prev_sample):
            assert torch.equal(x[:, :, 0], s.expand(3, 2)) and torch.equal(x[:, :, -1], g.expand(3, 2))
    plans = to_cells("u-maze", records[-1].prev_sample)
    assert plans.shape == (3, HORIZON, 2)
    assert np.allclose(plans[:, 0], start, atol=1e-5) and np.allclose(plans[:, -1], goal, atol=1e-5)


def test_the_loop_with_inpainting_equals_a_plain_diffusers_loop(tiny_planner) -> None:
    start, goal = np.array([1.5, 1.5]), np.array([7.5, 7.5])
    *_, last = tiny_planner.steps("pillars", start, goal, 2, "ddim", 8, torch.Generator().manual_seed(5))
    # by hand: diffusers' DDIM with the ends written back after every step
    m = maze("pillars")
    s, g = (torch.tensor(m.normalise(p), dtype=torch.float32).expand(2, 2) for p in (start, goal))
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, HORIZON, generator=gen)
    scheduler = DDIMScheduler.from_config(tiny_planner.scheduler_config)
    scheduler.set_timesteps(8)
    x = fix_ends(x, s, g)
    layouts = torch.full((2,), tiny_planner.layout_id("pillars"))
    with torch.inference_mode():
        for t in scheduler.timesteps:
            eps = tiny_planner.eps_theta(x, t, layouts)
            x = fix_ends(scheduler.step(eps, t, x, generator=gen).prev_sample, s, g)
    assert torch.equal(last.prev_sample, x)


def test_same_seed_same_plan_other_seed_other_plan(tiny_planner) -> None:
    def plan(seed: int) -> bytes:
        *_, last = tiny_planner.steps("medium", np.array([1.5, 1.5]), np.array([7.5, 7.5]), 2, "ddpm", 10,
                                      torch.Generator().manual_seed(seed))
        return last.prev_sample.numpy().tobytes()

    assert plan(1) == plan(1)
    assert plan(1) != plan(2)


# ----- the service -----
def test_endpoints_are_checked_and_moved_clear_of_walls() -> None:
    desk = PlannerDesk(ComputeGate(1))
    assert np.allclose(desk.endpoint("u-maze", 1.02, 1.98), [1.25, 1.75])
    for bad, message in (((0.5, 0.5), "inside a wall"), ((3.5, 4.5), "inside a wall"), ((12, 1), "between"),
                         ((float("nan"), 1), "between"), (("x", 1), "between")):
        with pytest.raises(ValueError, match=message):
            desk.endpoint("u-maze", *bad)
    with pytest.raises(ValueError, match="layout"):
        desk.endpoint("spiral", 1.5, 1.5)


def test_service_plans_through_the_gate_and_checks_its_request(shipped) -> None:
    gate = ComputeGate(1)
    desk = PlannerDesk(gate)
    start, goal = desk.endpoint("u-maze", 1.5, 1.5), desk.endpoint("u-maze", 1.5, 7.5)
    updates = list(desk.plan("u-maze", start, goal, 4, "ddim", 10, 0))
    assert [u.done for u in updates] == list(range(1, 11)) and updates[-1].run is not None
    run = updates[-1].run
    assert run.x_t.shape == (11, 4, HORIZON, 2) and run.eps.shape == run.pred_x0.shape == (10, 4, HORIZON, 2)
    assert run.straight_collides and run.shortest == pytest.approx(2 * np.hypot(4.5, 1.5) + 3, abs=1e-3)
    assert gate.steps_run >= 10
    assert desk.final_picture(run).shape == desk.frame_picture(run, 0).shape == (9 * 56, 9 * 56, 3)
    assert desk.step_picture(run, 9, 3).shape[1] > 2 * 9 * 56
    for kwargs, message in (({"n": 33}, "Plans"), ({"steps": 101}, "Steps"), ({"sampler": "euler"}, "samples with"),
                            ({"seed": -1}, "Seed")):
        with pytest.raises(ValueError, match=message):
            next(desk.plan("u-maze", start, goal, **kwargs))


# ----- training -----
@pytest.mark.slow
def test_training_script_runs_checkpoints_and_resumes(tmp_path) -> None:
    run = tmp_path / "run"
    args = [sys.executable, "-m", "diffusion.training.train_planner", "--output_dir", str(run),
            "--paths_per_layout", "40", "--train_batch_size", "16", "--block_out_channels", "8", "16",
            "--checkpointing_steps", "3", "--eval_pairs", "2", "--logging_steps", "1", "--num_threads", "1"]
    subprocess.run([*args, "--max_train_steps", "3"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    first = (run / "planner" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    out = subprocess.run([*args, "--max_train_steps", "5", "--resume", "latest"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300)
    assert "resumed from checkpoint-3" in out.stderr
    log = (run / "train.log").read_text()
    assert "gate step 3" in log and "step 5 loss" in log
    planner = Planner.from_folder(run / "planner")
    assert planner.layouts == mazes.LAYOUT_NAMES
    assert hashlib.sha256(first).digest() != hashlib.sha256(
        (run / "planner" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).digest()


# ----- the shipped model -----
def test_shipped_planner_is_small_and_safetensors_only() -> None:
    files = [p for p in PLANNER_FOLDER.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    assert any(p.suffix == ".safetensors" for p in files)
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt") for p in files)


@pytest.mark.slow
def test_shipped_planner_passes_the_gate_on_40_held_out_pairs(shipped) -> None:
    rows = run_gate(shipped, pairs=40, sampler="ddim", steps=20)
    assert [r.layout for r in rows] == list(mazes.LAYOUT_NAMES)
    for row in rows:
        assert row.success >= TARGETS["success"], row.line()
        assert row.length_ratio <= TARGETS["length_ratio"], row.line()
        assert row.straight_collides > 0.3, row.line()  # the pairs need a detour: the baseline fails
    # the pairs are held out: no training path joins their cells
    starts, goals = gate_pairs("medium", 40)
    _, held_out = mazes.cell_pairs("medium")
    m = maze("medium")
    assert all((m.cell_of(s), m.cell_of(g)) in held_out for s, g in zip(starts, goals))
