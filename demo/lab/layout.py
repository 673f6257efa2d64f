"""The layout view: the planned regions of a two-object prompt and their masks at a recorded step."""

from __future__ import annotations

import gradio as gr

from demo.common import LATEX
from demo.lab.session import Controls, LabSession, recorded_run, step_index
from demo.theory import LAYOUT_VIEW


def lab_layout(session: LabSession | None, step: float) -> tuple:
    """Each object's region and its own predicted x0 at recorded step ``step`` (1-based), then the composition."""
    if session is None:
        return [], "Run the reverse process with a two-object prompt (for example *a red circle left of a blue square*)."
    traj = recorded_run(session)
    index = step_index(traj, step)
    view = traj.steps[index]
    if view.regions is None:
        return [], ("This run was not drawn by layout: use a text model, a prompt that names two objects "
                    "(*a red circle left of a blue square*) and the layout switch on **auto**, then run.")
    gallery = []
    for k, region in enumerate(view.regions, 1):
        gallery += [(region.weight, f"object {k}: its region (white: its prediction alone)"),
                    (region.pred_x0, f"object {k}: predicted x0 of '{region.caption}'")]
    gallery.append((view.pred_x0, "composed: the predicted x0 this step used"))
    what = {
        "joint": "Both objects share one x_t: its prediction is each caption's in its region, the two averaged outside "
                 "(MultiDiffusion, Bar-Tal et al. 2023, Eq. 5), then guided.",
        "apart": "Each object now follows its own trajectory and its own guided prediction (in the composed picture "
                 "the other object would change its colour or shape); the picture is their composition.",
        "apart, unguided": "Each object follows its own trajectory without guidance for the last fifth of the steps "
                           "(guidance in a limited interval, Kynkäänniemi et al. 2024).",
    }
    note = (f"Step {index + 1} of {len(traj.steps)}, t = {view.timestep:.0f}, phase **{view.layout_phase}**. "
            + what.get(view.layout_phase or "", ""))
    return gallery, note


def build_layout(c: Controls, run_event: gr.Dependency) -> None:
    gr.Markdown(LAYOUT_VIEW, latex_delimiters=LATEX)
    gallery = gr.Gallery(label="regions and their predictions at this step", columns=5, height="auto",
                         elem_classes=["pixelated"], elem_id="layout-gallery")
    note = gr.Markdown(elem_id="layout-note")
    # ----- events -----
    inputs, outputs = [c.session, c.slider], [gallery, note]
    c.slider.change(lab_layout, inputs=inputs, outputs=outputs, api_name="lab_layout", show_progress="hidden")
    run_event.then(lab_layout, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")
