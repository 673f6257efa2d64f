"""Assemble the tabs into one Gradio app."""

from __future__ import annotations

import gradio as gr

from demo.tab_lab import build_lab_tab
from demo.tab_lessons import build_lessons_tab
from demo.tab_planner import build_planner_tab
from demo.tab_playground import build_playground_tab
from demo.tab_sampling import build_sampling_tab
from demo.tab_text import build_text_tab
from diffusion.studio import ExportDir, StateBudget, Studio

INTRO = """# Diffusion Classroom
Diffusion models, demonstrated: sample digits from a DDPM trained for this app, watch the reverse
process one step at a time, train a diffusion model live on 2-D points, and generate images from text
with latent diffusion. Everything runs
on this machine; the embedded models need no network."""


# Gradio's cache of results and uploads: every 10 minutes, files older than an hour go (and all at exit).
CACHE_CLEANUP = (600, 3600)

# Small images (32x32 digits) are shown large with crisp pixels; the files keep their native size.
CSS = """
.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.model-card { font-size: 0.95em; }
"""


def build_app(studio: Studio, queue_size: int = 32, state_budget: StateBudget | None = None) -> gr.Blocks:
    """The app; ``state_budget`` bounds the step-lab runs all sessions keep (default: 1 GiB, one hour)."""
    budget = state_budget if state_budget is not None else StateBudget()
    exports = ExportDir()
    with gr.Blocks(title="Diffusion Classroom", delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("Lessons", id="lessons"):
                build_lessons_tab(studio, app, tabs)
            with gr.Tab("DDPM sampling", id="sampling"):
                build_sampling_tab(studio)
            with gr.Tab("Step lab", id="lab"):
                build_lab_tab(studio, budget, exports, app)
            with gr.Tab("Playground: train on points", id="playground"):
                build_playground_tab(studio, budget, exports)
            with gr.Tab("Planner: paths in a maze", id="planner"):
                build_planner_tab(studio, budget, exports)
            with gr.Tab("Text to image (latent)", id="text"):
                build_text_tab(studio)
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    return app
