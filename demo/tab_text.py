"""Tab 3: latent text-to-image with classifier-free guidance."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from demo.common import (
    GUIDANCE_SLIDER_MAX,
    LATEX,
    MODEL_CONCURRENCY,
    LockedPlot,
    SAMPLER_CHOICES,
    Drawn,
    Tick,
    card_note,
    card_request,
    describe_model,
    Shown,
    readable,
    status_line,
    streamed,
    user_errors,
)
from demo.theory import LDM
from demo.figures import layout_figure
from diffusion.studio import LAYOUT_MODES, MAX_TEXT_BATCH, Layout, Progress, PromptTokens, Studio

TEXT_STEPS_SLIDER_MAX = 200  # latent models need far fewer steps than DDPM's 1000


#: Example prompts for the embedded ``ldm-shapes`` model: full and partial prompts, two
#: objects, and a colour-shape pair held out of its training data ("a purple star").
EXAMPLE_PROMPTS = (
    "a large red circle in the top left corner",
    "small blue square, bottom right",
    "a yellow star",
    "a heart in the center",
    "a large green triangle at the top on a black background",
    "a red circle left of a blue square",
    "a pink heart above a cyan circle",
    "a large purple star in the center",
)


def token_view(tokens: PromptTokens | None) -> list[tuple[str, str | None]]:
    """Tokens for ``gr.HighlightedText``: unknown words and dropped words are labelled."""
    if tokens is None:
        return []
    out: list[tuple[str, str | None]] = [(f"{t} ", "unknown" if t == "[UNK]" else None) for t in tokens.tokens]
    out += [(f"{w} ", "dropped (too long)") for w in tokens.truncated_words]
    return out


def layout_note(layouts: list[Layout | None], fallback: str | None = None) -> str:
    """What the status line says about the layout: drawn by layout (and how), or why not (``fallback``: the
    planner's reason for a prompt that relates things it cannot read), or nothing for other prompts."""
    first = next((layout for layout in layouts if layout is not None), None)
    if first is None:
        return f" · {fallback}" if fallback else ""
    return (" · drawn by a planned layout (each object from its own caption in its region; "
            f"image 1: {first.describe()})")


def text_updates(studio: Studio, updates: Iterator[Progress]) -> Iterator[tuple | Tick]:
    """A text run as the tab shows it: every step yielded (a cancelled run stops within one step, ``streamed``),
    previews as they come (made only when sent: ``Drawn``), then the grid; the layout figure is drawn once."""
    plan: tuple[Callable[[], Any], str] | None = None
    for update in updates:
        note = ""
        if update.prompt is not None and update.prompt.unknown_words:
            note += " · unknown words (ignored by the model): " + ", ".join(update.prompt.unknown_words)
        if update.prompt is not None and update.prompt.truncated_words:
            note += (" · prompt too long for the text encoder; dropped: "
                     + " ".join(update.prompt.truncated_words[:50]))
        if plan is None and update.request is not None:  # the checked request: its images' layouts
            layouts = studio.layouts(update.request)
            plan = (functools.cache(lambda layouts=layouts: layout_figure(layouts)),
                    layout_note(layouts, studio.layout_fallback(update.request)))
        status = status_line(update) + note + (plan[1] if plan else "")
        figure = plan[0] if plan else (lambda: None)
        if update.done:
            yield update.grid, token_view(update.prompt), status, figure()
        elif update.preview is not None:  # the first preview at once, then as often as the load allows
            yield Tick(Drawn(lambda u=update, s=status, f=figure: (u.preview, token_view(u.prompt), s, f())),
                       preview=True)
        else:
            yield Tick((gr.skip(), gr.skip(), status, gr.skip()))


def make_text_handler(studio: Studio):
    @streamed(studio.runner)
    def text_to_image(model_id: str, prompt: str, negative_prompt: str, guidance: float, sampler: str,
                      steps: float, seed: float, batch: float, layout: str = "auto") -> Shown:
        """Images for ``prompt``, streamed; ``layout`` "auto" draws a two-object prompt by a planned layout."""
        with user_errors():
            request = card_request(studio.card(model_id), sampler, steps, seed, n=batch, prompt=prompt,
                                   negative_prompt=negative_prompt, guidance=guidance, layout=layout)
            updates = studio.generate(str(model_id), request, previews=10)  # checked and loaded here
        return Shown((updates,), lambda updates: readable(text_updates(studio, updates)))

    return text_to_image


def build_text_tab(studio: Studio) -> None:
    cards = studio.cards("latent-text")
    offline = [c for c in cards if c.local]
    default = (offline or cards)[0]
    # ----- layout -----
    if not offline:
        gr.Markdown("⚠️ **No latent text-to-image model is available offline yet.** The hub models below load "
                    "only where the Hugging Face hub (or a populated cache) is reachable; otherwise the tab says "
                    "why. Pass a local diffusers folder with `python app.py --model-dir PATH`.",
                    elem_id="text-notice")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            # the prompt and Generate first: at 1280x720 both, and the images beside them, fit the first screen
            model = gr.Dropdown([(c.title, c.id) for c in cards], value=default.id, label="Model")
            prompt = gr.Textbox(label="Prompt", value="a large red circle in the top left corner", lines=2,
                                elem_id="text-prompt")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="text-generate")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="text-stop")
            gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt],
                        label="Example prompts (embedded shapes model; the last is a held-out colour-shape pair)")
            with gr.Accordion("About this model", open=False):
                about = gr.Markdown(card_note(default), elem_classes=["model-card"])
            negative = gr.Textbox(label="Negative prompt", value="")
            guidance = gr.Slider(0.0, GUIDANCE_SLIDER_MAX, value=default.default_guidance, step=0.5, label="Guidance scale w")
            sampler = gr.Dropdown(SAMPLER_CHOICES, value=default.default_sampler, label="Sampler")
            steps = gr.Slider(1, TEXT_STEPS_SLIDER_MAX, value=default.default_steps, step=1, label="Steps")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="text-seed")
                batch = gr.Slider(1, MAX_TEXT_BATCH, value=4, step=1, label="Batch")
            layout = gr.Radio(list(LAYOUT_MODES), value="auto", elem_id="text-layout",
                              label="Two objects: draw by a planned layout (auto) or the plain model (off)")
        with gr.Column(scale=2):
            grid = gr.Image(label="Images (streams decoded predicted x0)", format="png", interactive=False,
                            buttons=["download", "fullscreen"], height=360, elem_id="text-grid",
                            elem_classes=["pixelated"])
            tokens = gr.HighlightedText(label="How the text encoder reads the prompt", combine_adjacent=False)
            status = gr.Markdown(elem_id="text-status")
            plan = LockedPlot(label="Planned layout (two-object prompts): each object's region", elem_id="text-layout-plot")
    with gr.Accordion("How it works: latent diffusion and classifier-free guidance", open=False):
        gr.Markdown(LDM, latex_delimiters=LATEX)
    # ----- events -----
    describe_model(studio, model, about)
    generating = run.click(make_text_handler(studio),
                           inputs=[model, prompt, negative, guidance, sampler, steps, seed, batch, layout],
                           outputs=[grid, tokens, status, plan], api_name="text_to_image", **MODEL_CONCURRENCY)
    stop.click(None, cancels=[generating], api_visibility="private")  # the run stops after the step in flight
