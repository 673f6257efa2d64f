"""The cross-attention view: one map per prompt token at a recorded step (Rombach et al. 2022, Sec. 3.3)."""

from __future__ import annotations

import gradio as gr

from demo.common import LATEX, user_errors
from demo.lab.session import Controls, LabSession, recorded_run, step_index
from demo.theory import ATTENTION
from diffusion.studio import attention_overlays


def lab_attention(session: LabSession | None, step: float, layers: str | None) -> tuple:
    """Cross-attention per prompt token at recorded step ``step`` (1-based), over its predicted x0."""
    if session is None:
        return [], gr.skip(), "Run the reverse process with a text model to see its cross-attention."
    traj = recorded_run(session)
    if traj.tokens is not None and traj.steps and traj.steps[0].regions is not None:
        return [], gr.Dropdown(choices=["all"], value="all"), (
            "This run drew the prompt by layout: each object's region attends to its own caption, so there are no "
            "maps of the prompt's words. Set the layout switch above to **off** and run again to see the plain "
            "model's maps (the words of both objects land on one object); the **Layout** tab shows the regions.")
    if traj.tokens is None or traj.attention_layers is None:
        why = ("Cross-attention maps are recorded for runs of one image: set Images to 1 and run again."
               if traj.request.n > 1 and traj.steps and traj.steps[0].latents is not None else
               "This model has no cross-attention (pixel models are unconditional): choose a text model and run.")
        return [], gr.Dropdown(choices=["all"], value="all"), why
    index = step_index(traj, step)
    choices = ["all", *traj.attention_layers]
    missing = layers not in choices
    layers = "all" if missing else str(layers)
    view = traj.steps[index]
    with user_errors():
        gallery = attention_overlays(view, traj.tokens, layers)
    counts = ", ".join(f"{res}: {n}" for res, n in traj.attention_layers.items())
    note = (f"Step {index + 1} of {len(traj.steps)}, $t = {view.timestep:.0f}$; layers averaged: "
            f"{'all (' + counts + ')' if layers == 'all' else layers}. Shares of all tokens sum to 100%.")
    if missing:
        note += " (This model has no layers at that resolution: showing all.)"
    return gallery, gr.Dropdown(choices=choices, value=layers), note


def build_attention(c: Controls, run_event: gr.Dependency) -> None:
    gr.Markdown(ATTENTION, latex_delimiters=LATEX)
    # a dropdown that accepts any value: each run offers its own model's resolutions
    layers = gr.Dropdown(["all"], value="all", label="Layers (feature-map resolution)", allow_custom_value=True,
                         elem_id="attention-layers")
    gallery = gr.Gallery(label="attention per token over the step's predicted x0", columns=6, height="auto",
                         elem_classes=["pixelated"], elem_id="attention-gallery")
    note = gr.Markdown(latex_delimiters=LATEX, elem_id="attention-note")
    # ----- events -----
    inputs, outputs = [c.session, c.slider, layers], [gallery, layers, note]
    # the public event first: gradio names private events after their function too
    c.slider.change(lab_attention, inputs=inputs, outputs=outputs, api_name="lab_attention", show_progress="hidden")
    # a new run whose last step has the same number as the slider's fires no .change: refresh the maps
    run_event.then(lab_attention, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")
    layers.input(lab_attention, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")
