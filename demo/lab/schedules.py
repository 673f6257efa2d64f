"""The noise schedules: the model's own beside linear, scaled-linear and cosine."""

from __future__ import annotations


import gradio as gr
import numpy as np

from demo.common import LATEX, MODEL_CONCURRENCY, LockedPlot, Shown, as_int, one_step, shown, user_errors
from demo.figures import schedule_figure
from demo.lab.session import Controls, EXAMPLES
from diffusion.studio import Studio, make_grid, read_image


def make_schedules_show(studio: Studio):
    def schedules_show(model_id: str, timestep: float, image: np.ndarray | None, seed: float) -> Shown:
        """The noise schedule of ``model_id`` beside the common ones, marked at ``timestep``, and ``image`` (an example when none) noised at six t with ``seed``."""
        with user_errors():
            curves = studio.schedule(str(model_id))  # loads the model (its scheduler config)
            t = as_int(timestep, "t", 0, len(curves.timesteps) - 1)
            family = studio.schedule_family(len(curves.timesteps))
            if image is None:  # until the user loads one: an example that suits the model
                digit = studio.card(str(model_id)).kind == "pixel"
                image = read_image(next(p for p in EXAMPLES if ("digit" in p) == digit))
            ts = np.linspace(0, len(curves.timesteps) - 1, 6).round().astype(int)
            strips = studio.forward_strip(str(model_id), image, [int(s) for s in ts], seed)  # checked here
        # the strip is the job's one step; the figure is drawn off the model thread
        return shown(strips, lambda frames: (schedule_figure(curves, t, family), make_grid(frames, ncols=len(frames))))

    return one_step(studio.runner, schedules_show)


def build_schedules(studio: Studio, c: Controls) -> None:
    gr.Markdown("The model's own schedule (black) against DDPM's linear, Stable Diffusion's scaled-linear "
                "and the cosine schedule (Nichol & Dhariwal 2021); the red line is the forward lab's $t$. "
                "The strip shows the forward lab's image at six evenly spaced $t$.", latex_delimiters=LATEX)
    show = gr.Button("Compare the schedules")
    plot = LockedPlot(label="Schedules")
    strip = gr.Image(label="x_t ~ q(x_t | x_0) at t = 0 … T (latent models: each latent x_t decoded to pixels)", format="png", interactive=False, height=120,
                     elem_classes=["pixelated"])
    # ----- events -----
    show.click(make_schedules_show(studio), inputs=[c.model, c.t, c.source, c.seed], outputs=[plot, strip],
               api_name="schedules_show", **MODEL_CONCURRENCY)
