"""The reverse process, recorded step by step: the run itself and the shown step."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from demo.common import Shown, Tick, card_request, readable, streamed, user_errors
from demo.figures import schedule_picture, update_strip
from demo.lab.session import LabSession, recorded_run, step_index
from diffusion.studio import StateBudget, StepView, Studio, Trajectory, trajectory_nbytes, update_latex


def make_lab_run(studio: Studio, budget: StateBudget):
    @streamed(studio.runner)
    def lab_run(model_id: str, sampler: str, steps: float, seed: float, prompt: str,
                guidance: float, images: float = 1, layout: str = "auto") -> Shown:
        """Record a run step by step; ``layout`` "auto" draws a two-object prompt by a planned layout."""
        with user_errors():
            card = studio.card(model_id)
            request = card_request(card, sampler, steps, seed, prompt=prompt, guidance=guidance, layout=layout)
            run = studio.trajectory(card.id, request, images=images)  # checked and loaded here
        return Shown((run,), lambda run: readable(lab_updates(run, card.id, budget)))

    return lab_run


def lab_updates(run: Iterator[tuple[int, int, Trajectory]], model_id: str,
                budget: StateBudget) -> Iterator[tuple | Tick]:
    """A step-lab run as the tab shows it: each step's pictures while it runs (every step yielded, so a cancel
    stops within one), then the recorded run kept in the user's session; the schedule figure, the typeset
    update and the update strip are drawn off the model thread."""
    for done, total, traj in run:
        view = traj.steps[-1]
        if done < total:  # every step is yielded; the browser gets one every stream_interval
            yield Tick((gr.skip(), gr.skip(), view.x_t, view.noise, view.pred_x0, view.latents, gr.skip(),
                        gr.skip(), gr.skip(), f"Running: step {done}/{total}, {traj.wall_s:.1f} s"))

    def finished() -> tuple:
        session = LabSession(model_id, traj, schedule_picture(traj.curves))
        budget.admit(session, trajectory_nbytes(traj) + session.schedule.nbytes)
        last = traj.steps[-1]
        return (session, gr.Slider(minimum=1, maximum=total, value=total, step=1, interactive=True),
                last.x_t, last.noise, last.pred_x0, last.latents, session.schedule.at(last.timestep),
                update_latex(traj.terms[-1], traj.terms[-2] if len(traj.terms) > 1 else None), update_view(last),
                f"Done: {total} steps in {traj.wall_s:.2f} s ({traj.precision}). Drag the slider (or press "
                "Play) to revisit any step.")

    yield finished()


def lab_show(session: LabSession | None, step: float) -> tuple:
    """Show recorded step ``step`` (1-based) of the user's run."""
    traj = recorded_run(session)
    index = step_index(traj, step)
    view = traj.steps[index]
    return (view.x_t, view.noise, view.pred_x0, view.latents, session.schedule.at(view.timestep),
            update_latex(traj.terms[index], traj.terms[index - 1] if index else None), update_view(view))


def update_view(view: StepView) -> np.ndarray | None:
    """The step's update as pictures that add up to x_{t-1} (DDPM and DDIM; None for the other samplers)."""
    return None if view.update is None else update_strip(view.update)
