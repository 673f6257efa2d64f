"""Tab 1: unconditional pixel-space DDPM sampling."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from demo.common import (
    LATEX,
    MODEL_CONCURRENCY,
    SAMPLER_CHOICES,
    Tick,
    card_note,
    card_request,
    describe_model,
    random_seed,
    Shown,
    readable,
    status_line,
    streamed,
    user_errors,
)
from demo.theory import DDPM
from diffusion.studio import MAX_STEPS, SAMPLERS, Progress, Studio


def make_sample_handler(studio: Studio):
    """The tab's model event: plain values in, a streamed grid and a status line out."""

    @streamed(studio.runner)
    def sample(model_id: str, sampler: str, steps: float, eta: float, batch: float,
               seed: float) -> Shown:
        """Digits (or a hub model's images) from ``model_id``: ``batch`` images of ``steps`` steps of ``sampler``, streamed previews, then the grid."""
        with user_errors():
            request = card_request(studio.card(model_id), sampler, steps, seed, n=batch, eta=eta)
            updates = studio.generate(str(model_id), request)  # checked and loaded here, before the model thread
        return Shown((updates,), lambda updates: readable(sample_updates(updates)))

    return sample


def sample_updates(updates: Iterator[Progress]) -> Iterator[tuple[np.ndarray, str] | Tick]:
    """A sampling run as the tab shows it: every step yielded (so a cancelled run stops within one step,
    ``streamed``), previews as they come, then the grid."""
    for update in updates:
        status = status_line(update)
        if update.done:
            yield update.grid, status
        elif update.preview is not None:  # the first preview at once, then as often as the load allows
            yield Tick((update.preview, status + " · *preview: predicted x0*"), preview=True)
        else:
            yield Tick((gr.skip(), status + " · *preview: predicted x0*"))


def eta_for_sampler(sampler: str) -> dict:
    """eta only means something for DDIM: show its slider for DDIM alone."""
    return gr.update(visible=SAMPLERS[sampler].uses_eta if sampler in SAMPLERS else False)


def build_sampling_tab(studio: Studio) -> None:
    cards = studio.cards("pixel")
    default = cards[0]
    # ----- layout -----
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            model = gr.Dropdown([(c.title, c.id) for c in cards], value=default.id, label="Model")
            about = gr.Markdown(card_note(default), elem_classes=["model-card"])
            sampler = gr.Dropdown(SAMPLER_CHOICES, value=default.default_sampler, label="Sampler")
            steps = gr.Slider(1, MAX_STEPS, value=default.default_steps, step=1, label="Steps", elem_id="ddpm-steps")
            eta = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="eta (DDIM: 0 deterministic, 1 DDPM-like)",
                            visible=SAMPLERS[default.default_sampler].uses_eta)
            batch = gr.Slider(1, studio.max_batch, value=16, step=1, label="Batch (images)", elem_id="ddpm-batch")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                reseed = gr.Button("🎲 Random seed", size="sm")
            with gr.Row():
                run = gr.Button("Sample", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="ddpm-stop")
        with gr.Column(scale=2):
            grid = gr.Image(label="Samples (streams predicted x0 while it runs)", format="png", type="numpy",
                            buttons=["download", "fullscreen"], interactive=False, height=420,
                            elem_id="ddpm-grid", elem_classes=["pixelated"])
            status = gr.Markdown(elem_id="ddpm-status")
    with gr.Accordion("How it works: DDPM, Algorithms 1 and 2", open=False):
        gr.Markdown(DDPM, latex_delimiters=LATEX)
    # ----- events -----
    describe_model(studio, model, about)
    reseed.click(random_seed, outputs=seed, api_name="random_seed", queue=False)
    sampler.change(eta_for_sampler, inputs=sampler, outputs=eta, api_visibility="private", queue=False)
    sampling = run.click(make_sample_handler(studio), inputs=[model, sampler, steps, eta, batch, seed],
                         outputs=[grid, status], api_name="sample", **MODEL_CONCURRENCY)
    stop.click(None, cancels=[sampling], api_visibility="private")  # stops after the step in flight (``streamed``)
