"""The step lab's per-user run and the controls every view reads (demo/tab_lab.py builds them)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from demo.common import as_int, kept
from demo.figures import SchedulePicture
from diffusion.studio import ASSETS, Trajectory


# the example images (the sheets of held-out and training digits are the lessons' data, not examples to noise)
EXAMPLES = sorted(str(p) for p in (ASSETS / "examples").glob("*.png")
                  if not p.name.startswith(("held-out", "training")))
PANEL = {"format": "png", "interactive": False, "height": 240, "elem_classes": ["pixelated"],
         "buttons": ["download", "fullscreen"]}


@dataclass
class LabSession:
    """Per-user state: the recorded run (with its per-step updates, schedule and recipe).

    Held under the app's :class:`StateBudget`, which may ``release`` it (expired, or memory needed
    for newer runs): the trajectory is dropped and the user is told to run again.
    """

    model_id: str
    trajectory: Trajectory | None
    schedule: SchedulePicture | None = None  # the run's schedule, drawn once; scrubbing moves the marker
    released: str | None = None  # why the run was released, once it was

    def release(self, reason: str) -> None:
        self.trajectory, self.schedule, self.released = None, None, reason


@dataclass
class Controls:
    """The controls above the sub-tabs, which every view reads."""

    model: gr.Dropdown
    sampler: gr.Dropdown
    steps: gr.Slider
    seed: gr.Number
    prompt: gr.Textbox
    guidance: gr.Slider
    images: gr.Slider
    layout: gr.Radio
    session: gr.State
    slider: gr.Slider  # the step being shown (built by the reverse-process view)
    t: gr.Slider | None = None  # the forward view's noise level (built by it)
    source: gr.Image | None = None  # the forward view's image (built by it)


def recorded_run(session: LabSession | None) -> Trajectory:
    """The user's recorded run, or a ``gr.Error`` that says to run (again)."""
    return kept(session, "trajectory", "Run the reverse process first (a run is kept for a limited time, then run it "
                "again).", "Your step-lab run", "run the reverse process again")


def step_index(traj: Trajectory, step: float) -> int:
    """The 0-based index of the 1-based step ``step`` of ``traj``."""
    return as_int(step, "Step", 1, len(traj.steps)) - 1
