"""The forward process q(x_t | x_0) on the user's image and SDEdit's "denoise from here"."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from demo.common import (
    LATEX,
    MODEL_CONCURRENCY,
    CheckedImage,
    Shown,
    Tick,
    card_request,
    one_step,
    readable,
    shown,
    streamed,
    user_errors,
)
from demo.lab.session import Controls, EXAMPLES, PANEL
from demo.theory import FORWARD
from diffusion.studio import IMAGE_LIMITS, MAX_STEPS, ForwardView, Progress, Studio


def make_forward_show(studio: Studio):
    def forward_show(model_id: str, image: np.ndarray | None, timestep: float, seed: float) -> Shown:
        """SDEdit's first half: ``image`` noised to ``timestep`` by q(x_t | x_0) with ``seed`` (latent models noise its latents)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            views = studio.forward_process(str(model_id), image, timestep, seed)  # checked and loaded here
        return shown(views, forward_panels)

    return one_step(studio.runner, forward_show)


def forward_panels(view: ForwardView) -> tuple:
    """The forward view's pictures and its equation with the numbers filled in."""
    text = (f"$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon = "
            f"{view.signal_coef:.4f}\\,x_0 + {view.noise_coef:.4f}\\,\\epsilon$ at $t = {view.timestep}$ "
            f"($\\bar\\alpha_t = {view.alpha_prod_t:.5f}$); std of $x_t$ = {view.x_t_std:.3f} "
            f"(of $x_0$: {view.x0_std:.3f}).")
    if view.reconstruction_psnr is not None:
        text += f" Autoencoder reconstruction of the image: PSNR {view.reconstruction_psnr:.1f} dB."
    return view.x0, view.x_t, view.latents, text


def make_forward_denoise(studio: Studio):
    @streamed(studio.runner)
    def forward_denoise(model_id: str, image: np.ndarray | None, timestep: float, sampler: str, steps: float,
                        seed: float, prompt: str, guidance: float) -> Shown:
        """SDEdit: ``image`` noised to ``timestep``, then denoised from there by ``sampler`` in ``steps`` steps (text models follow ``prompt``)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            request = card_request(studio.card(model_id), sampler, steps, seed, n=4, prompt=prompt, guidance=guidance)
            updates = studio.generate(str(model_id), request, previews=10, init_image=image, start_timestep=timestep)
        return Shown((updates,), lambda updates: readable(sdedit_updates(updates, timestep)))

    return forward_denoise


def sdedit_updates(updates: Iterator[Progress], timestep: float) -> Iterator[tuple | Tick]:
    """An SDEdit run as the view shows it: previews, then the four results (every step yielded, so a cancelled
    run stops within one step, ``streamed``)."""
    for update in updates:
        if update.done:
            used = (f" Prompt (from the box above the tabs): \"{update.request.prompt}\", guidance "
                    f"{update.request.guidance_scale:g}." if update.request.prompt else "")
            yield update.grid, (f"SDEdit from $t = {int(timestep)}$: {update.num_steps} of "
                                f"{update.request.steps} {update.request.sampler} steps, 4 seeds, "
                                f"{update.wall_s:.2f} s.{used}")
        elif update.preview is not None:
            yield Tick((update.preview, f"Denoising: step {update.step}/{update.num_steps}"), preview=True)
        else:
            yield Tick((gr.skip(), f"Denoising: step {update.step}/{update.num_steps}"))


def build_forward(studio: Studio, c: Controls) -> None:
    gr.Markdown(FORWARD, latex_delimiters=LATEX)
    with gr.Row():
        with gr.Column(scale=1):
            c.source = CheckedImage(label=f"Your image (cropped and resized to the model; at most {IMAGE_LIMITS})",
                                    type="numpy", sources=["upload", "clipboard"], height=200,
                                    elem_id="forward-image")
            gr.Examples([[p] for p in EXAMPLES], inputs=[c.source], label="Examples from assets/")
            c.t = gr.Slider(0, MAX_STEPS - 1, value=250, step=1, label="t (noise level)", elem_id="forward-t")
            sdedit = gr.Button("Denoise from here (SDEdit)", variant="primary")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x_0 as the model sees it", **PANEL)
                x_t = gr.Image(label="x_t ~ q(x_t | x_0)", elem_id="forward-xt", **PANEL)
            latents = gr.Image(label="latent channels of x_t (latent models)", format="png", interactive=False,
                               height=90, elem_classes=["pixelated"])
            text = gr.Markdown(latex_delimiters=LATEX, elem_id="forward-text")
            result = gr.Image(label="SDEdit results (4 seeds)", format="png", interactive=False, height=240,
                              elem_classes=["pixelated"], elem_id="forward-result")
            status = gr.Markdown(latex_delimiters=LATEX)
    # ----- events -----
    inputs, outputs = [c.model, c.source, c.t, c.seed], [x0, x_t, latents, text]
    forward_show = make_forward_show(studio)
    c.t.release(forward_show, inputs=inputs, outputs=outputs, api_name="forward_show", **MODEL_CONCURRENCY)
    c.source.upload(forward_show, inputs=inputs, outputs=outputs, api_visibility="private", **MODEL_CONCURRENCY)
    sdedit.click(make_forward_denoise(studio),
                 inputs=[c.model, c.source, c.t, c.sampler, c.steps, c.seed, c.prompt, c.guidance],
                 outputs=[result, status], api_name="forward_denoise", **MODEL_CONCURRENCY)
