"""The guidance view: the unconditional and conditional predictions at a recorded step, and x0 at
several guidance scales (Ho & Salimans 2022)."""

from __future__ import annotations


import gradio as gr

from demo.common import LATEX, MODEL_CONCURRENCY, Shown, one_step, shown, user_errors
from demo.lab.session import Controls, LabSession, PANEL, recorded_run, step_index
from demo.theory import GUIDANCE
from diffusion.studio import GUIDANCE_SCALES, GuidanceView, Studio


def make_lab_guidance(studio: Studio):
    def lab_guidance(session: LabSession | None, step: float) -> Shown:
        """Classifier-free guidance at recorded step ``step`` (1-based) of the user's run: the unconditional and conditional predictions and x0 at several scales."""
        traj = recorded_run(session)
        index = step_index(traj, step)
        view = traj.steps[index]
        with user_errors():
            results = studio.guidance_view(traj.model_id, view, GUIDANCE_SCALES)  # checked and loaded here

        def panels(result: GuidanceView) -> tuple:
            gallery = [(img, f"w = {w:g}") for w, img in zip(result.scales, result.pred_x0, strict=True)]
            note = (f"Step {index + 1}, $t = {view.timestep:.0f}$: RMS of the guidance direction "
                    f"$\\epsilon_\\theta(z_t, y) - \\epsilon_\\theta(z_t, \\varnothing)$ = {result.direction_norm:.4f} "
                    f"(its picture is drawn ×{result.direction_scale:.0f}). "
                    f"The run used $w = {view.guidance.guidance_scale:g}$; all scales come from one cached pair"
                    + (" (of the first image)." if traj.request.n > 1 else "."))
            return result.uncond, result.text, result.direction, gallery, note

        return shown(results, panels)

    return one_step(studio.runner, lab_guidance)


def build_guidance(studio: Studio, c: Controls) -> None:
    gr.Markdown(GUIDANCE, latex_delimiters=LATEX)
    decompose = gr.Button("Decompose the current step (text models, guidance > 1)")
    with gr.Row():
        uncond = gr.Image(label="ε(z_t, ∅) unconditional", **PANEL)
        text = gr.Image(label="ε(z_t, y) conditional", **PANEL)
        direction = gr.Image(label="guidance direction ε(z_t, y) − ε(z_t, ∅)", **PANEL)
    gallery = gr.Gallery(label="predicted x0 for each guidance scale w", columns=6, height=220,
                         elem_classes=["pixelated"])
    note = gr.Markdown(latex_delimiters=LATEX)
    # ----- events -----
    decompose.click(make_lab_guidance(studio), inputs=[c.session, c.slider],
                    outputs=[uncond, text, direction, gallery, note], api_name="lab_guidance", **MODEL_CONCURRENCY)
