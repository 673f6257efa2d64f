"""Tab: the planner. A diffusion model that plans a path through a maze by denoising the whole trajectory,
the start and goal inpainted at every step (Janner et al. 2022). Choose a layout, click the start and the
goal on the maze, plan several samples, watch them denoise, and see which collide. Every handler is named
after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from demo.common import (
    LATEX,
    MODEL_CONCURRENCY,
    Shown,
    Tick,
    as_int,
    kept,
    readable,
    streamed,
    user_errors,
)
from demo.theory import PLANNER
from diffusion.studio import (
    LAYOUT_TITLES,
    MAX_PLANS,
    MAX_SEED,
    PLAN_CELL,
    PLANNER_SAMPLERS,
    SAMPLERS,
    ExportDir,
    PlanProgress,
    PlanRun,
    StateBudget,
    Studio,
    write_animation,
)

PICTURE = {"format": "png", "interactive": False, "buttons": ["download", "fullscreen"]}
# A start and goal per layout that need the maze's detour (cell units: x = column, y = row, y downwards)
DEFAULT_ENDS = {"u-maze": ((1.5, 1.5), (1.5, 7.5)), "medium": ((1.5, 1.5), (7.5, 7.5)),
                "pillars": ((1.5, 1.5), (7.5, 7.5))}


@dataclass
class PlannerSession:
    """Per-user state: the last planning run. Held under the app's :class:`StateBudget`, which may
    ``release`` it."""

    run: PlanRun | None
    released: str | None = None

    def release(self, reason: str) -> None:
        self.run, self.released = None, reason

    @property
    def nbytes(self) -> int:
        return self.run.nbytes if self.run is not None else 0


def _run(session: PlannerSession | None) -> PlanRun:
    return kept(session, "run", "Plan first (press Plan).", "Your plans", "plan again")


def _ends(studio: Studio, layout: str, sx: float, sy: float, gx: float, gy: float) -> tuple[np.ndarray, np.ndarray]:
    with user_errors():
        return (studio.planner.endpoint(layout, sx, sy, "start"), studio.planner.endpoint(layout, gx, gy, "goal"))


def plans_table(run: PlanRun) -> pd.DataFrame:
    """One row per plan: clear of the walls, reaches the goal, its length and its length over the shortest."""
    return pd.DataFrame({
        "plan": np.arange(1, len(run.checks) + 1),
        "clear of walls": ["yes" if not c.collides else f"no (segment {c.first_hit + 1})" for c in run.checks],
        "reaches goal": ["yes" if c.reaches else "no" for c in run.checks],
        "length (cells)": [round(c.length, 2) for c in run.checks],
        "× shortest": [round(c.length / run.shortest, 2) for c in run.checks],
    })


def run_summary(run: PlanRun) -> str:
    n = len(run.checks)
    clear = sum(c.success for c in run.checks)
    line = "meets a wall" if run.straight_collides else "is clear (no detour needed)"
    return (f"**{clear} of {n} plans clear** ({clear / n:.0%}), taking **{run.routes} different route"
            f"{'s' if run.routes != 1 else ''}**, with {SAMPLERS[run.sampler].title}, {len(run.timesteps)} steps, "
            f"in {run.wall_s:.2f} s. The shortest clear path is {run.shortest:.2f} cells long; the straight line "
            f"from start to goal {line}.")


def step_caption(run: PlanRun, index: int) -> str:
    t, a = float(run.timesteps[index]), float(run.alpha_bar[index])
    head = (f"Step {index + 1} of {len(run.timesteps)}, $t = {t:.0f}$, $\\bar\\alpha_t = {a:.4f}$. Left: the noisy plan "
            "$\\tau_t$ (ends written back). ")
    if run.prediction_type == "sample":  # the network predicts the clean plan; the noise follows (Ho et al. 2020, Eq. 4)
        return head + (f"Right: the network's prediction $\\hat\\tau_0$, clipped to the maze. Middle: the noise it "
                       f"implies, $\\hat\\epsilon = (\\tau_t - \\sqrt{{\\bar\\alpha_t}}\\,\\hat\\tau_0) / "
                       f"\\sqrt{{1-\\bar\\alpha_t}} = (\\tau_t - {np.sqrt(a):.3f}\\,\\hat\\tau_0) / "
                       f"{np.sqrt(1 - a):.3f}$ (Ho et al. 2020, Eq. 4, solved for the noise).")
    return head + (f"Middle: the network's noise estimate $\\epsilon_\\theta(\\tau_t, t)$. Right: "
                   f"$\\hat\\tau_0 = (\\tau_t - {np.sqrt(1 - a):.3f}\\,\\epsilon_\\theta) / {np.sqrt(a):.3f}$ "
                   "(Ho et al. 2020, Eq. 15), clipped to the maze.")


# ----- handlers -----
def make_planner_maze(studio: Studio):
    def planner_maze(layout: str, sx: float, sy: float, gx: float, gy: float) -> tuple:
        """The maze with the (checked) start and goal; the numbers as the planner will use them."""
        start, goal = _ends(studio, layout, sx, sy, gx, gy)
        with user_errors():
            picture = studio.planner.picture(layout, start, goal)
        return picture, *(round(float(v), 3) for v in (*start, *goal))

    return planner_maze


def make_planner_layout(studio: Studio):
    def planner_layout(layout: str) -> tuple:
        """A new layout: its default start and goal."""
        if layout not in DEFAULT_ENDS:
            raise gr.Error(f"choose a layout: {', '.join(DEFAULT_ENDS)}")
        (sx, sy), (gx, gy) = DEFAULT_ENDS[layout]
        return studio.planner.picture(layout, np.array([sx, sy]), np.array([gx, gy])), sx, sy, gx, gy, "start"

    return planner_layout


def make_planner_click(studio: Studio):
    def planner_click(layout: str, target: str, sx: float, sy: float, gx: float, gy: float,
                      evt: gr.SelectData) -> tuple:
        """A click on the maze sets the start (then the goal, in turn)."""
        x, y = (float(v) / PLAN_CELL for v in evt.index[:2])
        with user_errors():
            point = studio.planner.endpoint(layout, x, y, target)
        if target == "start":
            sx, sy = point
        else:
            gx, gy = point
        start, goal = _ends(studio, layout, sx, sy, gx, gy)
        return (studio.planner.picture(layout, start, goal), *(round(float(v), 3) for v in (*start, *goal)),
                "goal" if target == "start" else "start")

    return planner_click


def make_planner_plan(studio: Studio, budget: StateBudget, exports: ExportDir):
    @streamed(studio.runner)
    def planner_plan(layout: str, sx: float, sy: float, gx: float, gy: float, plans: float, sampler: str,
                     steps: float, seed: float) -> Shown:
        """Plan ``plans`` paths from the start (sx, sy) to the goal (gx, gy) in maze ``layout`` by denoising trajectories (Janner et al. 2022), streamed."""
        start, goal = _ends(studio, layout, sx, sy, gx, gy)
        with user_errors():  # checked and the planner loaded here, before the model thread
            updates = studio.planner.plan(layout, start, goal, plans, sampler, steps, seed)
        return Shown((updates,), lambda updates: readable(plan_updates(studio, updates, budget, exports)))

    return planner_plan


def plan_updates(studio: Studio, updates: Iterator[PlanProgress], budget: StateBudget,
                 exports: ExportDir) -> Iterator[tuple | Tick]:
    """A planning run as the tab shows it: the step count, then the run kept in the user's session with its
    pictures and animation (drawn off the model thread)."""
    for progress in updates:
        if progress.run is None:
            yield Tick((gr.skip(),) * 7 + (f"Planning: step {progress.done}/{progress.total}",))
    run = progress.run

    def finished() -> tuple:
        gif = write_animation(studio.planner.animation_frames(run), exports.path("plans.gif"), fps=8)
        session = PlannerSession(run)
        budget.admit(session, session.nbytes)
        last = len(run.x_t) - 1
        return (session, studio.planner.final_picture(run), plans_table(run),
                gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
                gr.Slider(minimum=0, maximum=last - 1, value=0, step=1, interactive=True),
                gr.Slider(minimum=1, maximum=len(run.checks), value=1, step=1, interactive=True),
                str(gif), run_summary(run))

    yield finished()


def make_planner_frame(studio: Studio):
    def planner_frame(session: PlannerSession | None, frame: float) -> np.ndarray:
        """Frame ``frame`` (0: the starting noise) of all plans, with that step's x0 estimates."""
        run = _run(session)
        return studio.planner.frame_picture(run, as_int(frame, "Frame", 0, len(run.x_t) - 1))

    return planner_frame


def make_planner_step(studio: Studio):
    def planner_step(session: PlannerSession | None, step: float, plan: float) -> tuple:
        """Step ``step`` (0-based) of plan ``plan`` (1-based): x_t, predicted noise and predicted x0."""
        run = _run(session)
        index = as_int(step, "Step", 0, len(run.timesteps) - 1)
        which = as_int(plan, "Plan", 1, len(run.checks)) - 1
        return studio.planner.step_picture(run, index, which), step_caption(run, index)

    return planner_step


# ----- the tab -----
def build_planner_tab(studio: Studio, budget: StateBudget, exports: ExportDir) -> None:
    layout0 = "u-maze"
    (sx0, sy0), (gx0, gy0) = DEFAULT_ENDS[layout0]
    # ----- layout -----
    gr.Markdown(PLANNER, latex_delimiters=LATEX)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            layout = gr.Dropdown([(title, key) for key, title in LAYOUT_TITLES.items()], value=layout0,
                                 label="Layout", elem_id="plan-layout")
            maze = gr.Image(studio.planner.picture(layout0, np.array([sx0, sy0]), np.array([gx0, gy0])),
                            label="Click the maze to set the start (black), then the goal (orange ring)",
                            elem_id="plan-maze", **PICTURE)
            target = gr.Radio(["start", "goal"], value="start", label="The next click sets", elem_id="plan-target")
            with gr.Row():
                sx = gr.Number(sx0, label="start x", minimum=0, maximum=9, step=0.1, elem_id="plan-sx")
                sy = gr.Number(sy0, label="start y", minimum=0, maximum=9, step=0.1, elem_id="plan-sy")
                gx = gr.Number(gx0, label="goal x", minimum=0, maximum=9, step=0.1, elem_id="plan-gx")
                gy = gr.Number(gy0, label="goal y", minimum=0, maximum=9, step=0.1, elem_id="plan-gy")
            with gr.Row():
                plans = gr.Slider(1, MAX_PLANS, value=8, step=1, label="Plans (samples)", elem_id="plan-count")
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            with gr.Row():
                sampler = gr.Dropdown([(SAMPLERS[s].title, s) for s in PLANNER_SAMPLERS], value="ddim", label="Sampler")
                steps = gr.Slider(1, 100, value=20, step=1, label="Steps (at most T = 100)")
            go = gr.Button("Plan", variant="primary", elem_id="plan-go")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="plan-status")
            with gr.Row():
                result = gr.Image(label="The plans: blue clear, vermillion through a wall (first crossing marked)",
                                  elem_id="plan-result", **PICTURE)
                animation = gr.Image(label="Denoising the plans (animation)", type="filepath",
                                     elem_id="plan-animation", **PICTURE)
            table = gr.Dataframe(label="Each plan, judged by the validator", interactive=False, elem_id="plan-table")
    with gr.Row():
        with gr.Column():
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame (0: pure noise)", interactive=False,
                              elem_id="plan-frame")
            frame_image = gr.Image(label="All plans at this frame, with their x0 estimates (green)",
                                   elem_id="plan-frame-image", **PICTURE)
        with gr.Column(scale=2):
            with gr.Row():
                step = gr.Slider(0, 1, value=0, step=1, label="Step", interactive=False, elem_id="plan-step")
                which = gr.Slider(1, 2, value=1, step=1, label="Plan", interactive=False, elem_id="plan-which")
            step_image = gr.Image(label="One step of one plan: x_t, predicted noise, predicted x0",
                                  elem_id="plan-step-image", **PICTURE)
            step_note = gr.Markdown(latex_delimiters=LATEX)
    session = gr.State(None, time_to_live=budget.ttl_s, delete_callback=budget.discard)
    # ----- events -----
    ends = [sx, sy, gx, gy]
    layout.change(make_planner_layout(studio), inputs=layout, outputs=[maze, *ends, target], api_name="planner_layout")
    maze.select(make_planner_click(studio), inputs=[layout, target, *ends], outputs=[maze, *ends, target],
                api_visibility="private")
    gr.on([box.submit for box in ends], make_planner_maze(studio), inputs=[layout, *ends], outputs=[maze, *ends],
          api_name="planner_maze")
    go.click(make_planner_plan(studio, budget, exports), inputs=[layout, *ends, plans, sampler, steps, seed],
             outputs=[session, result, table, frame, step, which, animation, status], api_name="planner_plan",
             **MODEL_CONCURRENCY)
    frame.change(make_planner_frame(studio), inputs=[session, frame], outputs=frame_image, api_name="planner_frame",
                 show_progress="hidden")
    gr.on([step.change, which.change], make_planner_step(studio), inputs=[session, step, which],
          outputs=[step_image, step_note], api_name="planner_step", show_progress="hidden")
