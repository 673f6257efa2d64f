"""Assemble the tabs into one Gradio app."""

from __future__ import annotations

import gradio as gr

from demo.tab_lab import build_lab_tab
from demo.tab_lessons import build_lessons_tab, link_to_playground
from demo.tab_planner import build_planner_tab
from demo.tab_playground import build_playground_tab
from demo.tab_sampling import build_sampling_tab
from demo.tab_text import build_text_tab
from demo.warmup import LessonResults
from diffusion.studio import ExportDir, StateBudget, Studio, __version__

INTRO = """# Diffusion Classroom
Diffusion models, demonstrated: sample digits from a DDPM trained for this app, watch the reverse
process one step at a time, train a diffusion model live on 2-D points, plan paths through a maze by
denoising them, and generate images from text with latent diffusion. Everything runs on this machine;
the embedded models need no network."""


# Gradio's cache of results and uploads: every 10 minutes, files older than an hour go (and all at exit).
CACHE_CLEANUP = (600, 3600)

# Small images (32x32 digits) are shown large with crisp pixels; the files keep their native size.
CSS = """
.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.model-card { font-size: 0.95em; }
"""
# Text at least WCAG AA (4.5:1) everywhere, tests/test_browser.py measures it on computed styles. The default
# theme's orange (#f97316) carries white text at 2.8:1 and its subdued grey (#bbbbc2) 1.9:1 on white: a darker
# orange (#c2410c, 5.2:1) and grey (#52525b, 7.7:1). The lesson stepper names every lesson, not only the current.
CSS += """
body {
  --color-accent: #c2410c; --button-primary-background-fill: #c2410c; --button-primary-background-fill-hover: #9a3412;
  --button-primary-border-color: #c2410c; --body-text-color-subdued: #52525b; --block-info-text-color: #52525b;
  --button-cancel-background-fill: #b91c1c; --button-cancel-background-fill-hover: #991b1b;
  --button-cancel-border-color: #b91c1c;
}
/* A picture's or plot's label sits above it, not on it: a floating chip covered figure titles. */
label[data-testid="block-label"].float { position: relative; top: 0; left: 0; margin-bottom: var(--size-1); }
/* Gallery captions as large as body text (14 px, 20 px presenting) and whole, not cut off with an ellipsis. */
.caption-label { font-size: var(--text-md) !important; white-space: normal !important; max-width: 100% !important; }
/* A lesson's gallery shows all its pictures whole: no inner scroll box that cuts grids off. */
.lesson-gallery .grid-wrap.fixed-height { height: auto !important; max-height: none !important; overflow: visible; }
#lessons .stepper-wrapper { padding-bottom: var(--size-2); }
#lessons .step-button .step-label { display: block; position: static; white-space: nowrap; max-width: none;
  font-size: var(--text-md); }
#lessons .step-button.pending { color: var(--body-text-color); }
#shared-run { display: none !important; }
"""

# Presenter mode: type read from the back of a room at 1280x720 (body text 20 px, nothing under 14 px).
# Gradio's theme defines each size as a CSS variable on :root; these override them for the whole page.
PRESENTER_CSS = """
body.presenter {
  --text-xxs: 14px; --text-xs: 16px; --text-sm: 18px; --text-md: 20px; --text-lg: 22px; --text-xl: 26px;
  --text-xxl: 30px; --body-text-size: 20px; --prose-text-size: 20px; --block-info-text-size: 18px;
  --block-label-text-size: 18px; --block-title-text-size: 20px; --section-header-text-size: 20px;
  --button-large-text-size: 22px; --button-medium-text-size: 20px; --button-small-text-size: 18px;
  --checkbox-label-text-size: 18px; --input-text-size: 20px; --chatbot-text-size: 20px;
}
body.presenter .gradio-container { max-width: 100% !important; }
"""
# Presenter layout: the lesson starts within 150 px of the top at 1280x720 (tests/test_browser.py). The class has
# seen the app's introduction; the header keeps the toggle only, as a small box at the top right.
PRESENTER_CSS += """
body.presenter #app-intro, body.presenter #lessons-intro { display: none; }
body.presenter #app-header { position: absolute; top: 4px; right: 8px; z-index: 10; width: auto; }
body.presenter #presenter-toggle { padding: 2px 8px; }
body.presenter #presenter-toggle .label-text { font-size: 0; }
body.presenter #presenter-toggle .label-text::after { content: "Presenter"; font-size: var(--text-md); }
body.presenter .gradio-container { padding-top: 0 !important; }
body.presenter #lessons .stepper-wrapper { padding-top: 0; padding-bottom: 0; }
body.presenter #lessons .stepper-container { padding: 0; }
body.presenter #lessons .lesson-text h3 { margin-top: 0; }
"""
# on at load with --presenter or ?presenter=1 in the address; the toggle follows
PRESENTER_ON_LOAD = """(start) => {
  const on = start || new URLSearchParams(window.location.search).get('presenter') === '1';
  document.body.classList.toggle('presenter', on);
  return on;
}"""
PRESENTER_TOGGLE = "(on) => { document.body.classList.toggle('presenter', on); return on; }"
CSS += PRESENTER_CSS


def build_app(studio: Studio, queue_size: int = 32, state_budget: StateBudget | None = None,
              presenter: bool = False, warm: bool = False) -> gr.Blocks:
    """The app; ``state_budget`` bounds the step-lab runs all sessions keep (default: 1 GiB, one hour);
    ``presenter`` starts every page in presenter mode (large type); ``warm`` runs every lesson's Show me once in
    the background from the start, so that each answers at once in class (:mod:`demo.warmup`)."""
    budget = state_budget if state_budget is not None else StateBudget()
    exports = ExportDir()
    lesson_results = LessonResults()
    with gr.Blocks(title="Diffusion Classroom", delete_cache=CACHE_CLEANUP) as app:
        with gr.Row(equal_height=False, elem_id="app-header"):
            gr.Markdown(INTRO, elem_id="app-intro")
            toggle = gr.Checkbox(presenter, label="Presenter mode (large type for a projector)", scale=0,
                                 min_width=220, elem_id="presenter-toggle")
        with gr.Tabs() as tabs:
            with gr.Tab("Lessons", id="lessons"):
                links = build_lessons_tab(studio, app, exports, lesson_results)
            with gr.Tab("DDPM sampling", id="sampling"):
                build_sampling_tab(studio)
            with gr.Tab("Step lab", id="lab"):
                open_shared_runs = build_lab_tab(studio, budget, exports, app, tabs)
            with gr.Tab("Playground: train on points", id="playground"):
                playground_views = build_playground_tab(studio, budget, exports)
            with gr.Tab("Planner: paths in a maze", id="planner"):
                build_planner_tab(studio, budget, exports)
            with gr.Tab("Text to image (latent)", id="text"):
                build_text_tab(studio)
        with gr.Row(elem_id="shared-run"):  # pressed by a page opened with ?run= (demo/lab/recipes.py), never seen
            shared_link = gr.Textbox(label="Shared run", elem_id="shared-run-link")
            shared_open = gr.Button("Open the shared run", elem_id="shared-run-open")
        shipped = ", ".join(f"{model} {digest}" for model, digest in studio.weights().items()) or "none shipped"
        gr.Markdown(f"Diffusion Classroom {__version__} · weights: {shipped} · usage analytics off",
                    elem_id="app-footer")
        # ----- events -----
        link_to_playground(links, tabs, playground_views)
        open_shared_runs(shared_link, shared_open)
        app.load(None, inputs=toggle, outputs=toggle, js=PRESENTER_ON_LOAD)
        toggle.change(None, inputs=toggle, outputs=toggle, js=PRESENTER_TOGGLE)
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    if warm:
        lesson_results.warm_in_background()
    return app
