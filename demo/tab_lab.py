"""Tab 2: the step lab.

Views over one model, each a sub-tab with its own builder: the reverse process (triptych, the live
equation of the chosen sampler with the step's numbers, play/pause, GIF/MP4/recipe export), the
guidance decomposition and the cross-attention maps per token (text models), the forward process
on the user's image with SDEdit ("denoise from here"), the sampler race, and the noise schedules.
Every handler is named after its ``api_name``. Each view is a module of :mod:`demo.lab`; this module puts them in
sub-tabs under the controls they share.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from demo.common import GUIDANCE_SLIDER_MAX, LATEX, SAMPLER_CHOICES, card_note, describe_model
from demo.lab.attention import build_attention
from demo.lab.forward import build_forward
from demo.lab.guidance import build_guidance
from demo.lab.layout import build_layout
from demo.lab.race import build_race
from demo.lab.recipes import OPEN_SHARED_RUN_JS
from demo.lab.reverse import build_reverse
from demo.lab.schedules import build_schedules
from demo.lab.session import Controls
from demo.theory import STEPS
from diffusion.studio import LAYOUT_MODES, MAX_LAB_IMAGES, MAX_STEPS, ExportDir, StateBudget, Studio


# Keyboard control of the reverse-process view (no mouse needed): left and right arrows step back and forward,
# Home and End jump to the first and last step, the space bar plays and pauses. Keys typed into a text field are
# left alone. Installed once per page by the app's load event (client side only, no server call).
KEYBOARD_JS = """() => {
  if (window.__labKeys) return; window.__labKeys = true;
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (target && (['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable)) return;
    const slider = document.querySelector('#lab-slider');
    if (!slider || slider.offsetParent === null) return;  // the step lab's reverse process is not on screen
    const box = slider.querySelector('input[type=number]');
    if (!box || box.disabled) return;
    const value = Number(box.value), low = Number(box.min || 1), high = Number(box.max || value);
    const moves = {ArrowLeft: value - 1, ArrowRight: value + 1, Home: low, End: high};
    if (event.key in moves) {
      box.value = String(Math.min(high, Math.max(low, moves[event.key])));
      box.dispatchEvent(new Event('input', {bubbles: true}));
      box.dispatchEvent(new Event('change', {bubbles: true}));
      event.preventDefault();
    } else if (event.key === ' ') {
      const playing = window.__labPlaying === true;
      document.querySelector(playing ? '#lab-pause' : '#lab-play')?.click();
      window.__labPlaying = !playing;
      event.preventDefault();
    }
  });
}"""


# ----- the tab -----
def build_lab_tab(studio: Studio, budget: StateBudget, exports: ExportDir, app: gr.Blocks,
                  tabs: gr.Tabs) -> Callable[[gr.Textbox, gr.Button], None]:
    """The step lab's views; returns the wiring of a shared run's Open button (the app puts the one that pages
    opened with ``?run=`` press outside the tabs, where it is always on the page)."""
    cards = studio.cards()
    default = studio.cards("pixel")[0]
    # ----- layout -----
    gr.Markdown(STEPS, latex_delimiters=LATEX)
    with gr.Row():
        model = gr.Dropdown([(card.title, card.id) for card in cards], value=default.id, label="Model", scale=2,
                            elem_id="lab-model")
        sampler = gr.Dropdown(SAMPLER_CHOICES, value="ddpm", label="Sampler", scale=1)
        steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps", scale=2)
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=1, elem_id="lab-seed")
    about = gr.Markdown(card_note(default), elem_classes=["model-card"])
    with gr.Row():
        prompt = gr.Textbox(label="Prompt (text models only)", scale=3, elem_id="lab-prompt")
        guidance = gr.Slider(0.0, GUIDANCE_SLIDER_MAX, value=4.0, step=0.5, label="Guidance (text models)", scale=1)
        images = gr.Slider(1, MAX_LAB_IMAGES, value=1, step=1, label="Images (seeds side by side)", scale=1)
        layout = gr.Radio(list(LAYOUT_MODES), value="auto", scale=1, elem_id="lab-layout",
                          label="Two objects: by layout (auto) or plain (off)")
    c = Controls(model, sampler, steps, seed, prompt, guidance, images, layout,
                 # per-user runs, bounded across users by ``budget`` and expired by gradio after the same time
                 session=gr.State(None, time_to_live=budget.ttl_s, delete_callback=budget.discard),
                 slider=gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False, elem_id="lab-slider",
                                  render=False))
    with gr.Tabs():
        with gr.Tab("Reverse process", id="reverse"):
            run_event, open_shared_runs = build_reverse(studio, budget, exports, c, tabs)
        with gr.Tab("Guidance", id="guidance"):
            build_guidance(studio, c)
        with gr.Tab("Cross-attention", id="attention"):
            build_attention(c, run_event)
        with gr.Tab("Layout (two objects)", id="layout"):
            build_layout(c, run_event)
        with gr.Tab("Forward process and SDEdit", id="forward"):
            build_forward(studio, c)
        with gr.Tab("Sampler race", id="race"):
            build_race(studio, c)
        with gr.Tab("Schedules", id="schedules"):
            build_schedules(studio, c)
    # ----- events -----
    describe_model(studio, model, about)
    app.load(None, js=KEYBOARD_JS)  # arrows, Home/End and space drive the reverse-process view
    app.load(None, js=OPEN_SHARED_RUN_JS)  # only in the browser: a page without ?run= sends nothing
    return open_shared_runs
