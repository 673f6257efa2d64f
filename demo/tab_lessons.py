"""Tab: Lessons. A guided course through both papers (``demo.lessons``), one ``gr.Step`` per lesson, each with
"Show me" buttons that run the embedded models live through the Studio (no pre-rendered images), a question for
the class with its answer revealed on click, and previous / next. ``?lesson=N`` opens lesson N.
Every model handler is named after its ``api_name``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable

import gradio as gr
import numpy as np

from demo.common import LATEX, MODEL_CONCURRENCY, LockedPlot, user_errors
from demo.handout import LessonPictures, handout_html
from demo.lesson_views.common import PICTURE
from demo.lesson_views.ddpm import (
    make_lesson_denoising,
    make_lesson_determinism,
    make_lesson_forward,
    make_lesson_race,
    make_lesson_sampling,
)
from demo.lesson_views.latent import (
    make_lesson_guidance,
    make_lesson_latent,
    make_lesson_layout,
    make_lesson_limits,
    make_lesson_text,
)
from demo.lessons import LESSONS
from demo.warmup import LessonResults
from diffusion.studio import ExportDir, Studio, data_url_bytes, read_image


# ----- the tab -----
def _show_me_button(label: str, number: int, handler: Callable, inputs: list, outputs: Callable[[], list],
             api_name: str, results: LessonResults) -> list:
    """The lesson's Show me button, then its outputs (built by ``outputs``, returned), then the event; its final
    results are kept in ``results`` (the warm-up runs it with its inputs' defaults). A lesson with a ``predict``
    question hides its outputs when Show me is pressed and asks it; a click reveals them (predict, then reveal)."""
    predict = LESSONS[number - 1].predict
    button = gr.Button(f"Show me: {label}", variant="primary", elem_id=f"lesson-{number}-show")
    if predict is not None:
        ask = gr.Markdown(f"**Predict first.** {predict}", latex_delimiters=LATEX, visible=False,
                          elem_id=f"lesson-{number}-predict", elem_classes=["predict"])
        reveal = gr.Button("Reveal the result", visible=False, elem_id=f"lesson-{number}-reveal-result")
    with gr.Column(elem_id=f"lesson-{number}-result") as result:
        shown = outputs()
    remembered = results.remember(number, api_name, handler, [component.value for component in inputs])
    button.click(remembered, inputs=inputs, outputs=shown, api_name=api_name, **MODEL_CONCURRENCY)
    if predict is not None:  # the outputs fill while hidden; the class predicts; the teacher reveals
        button.click(lambda: (gr.Column(visible=False), gr.Markdown(visible=True), gr.Button(visible=True)),
                     outputs=[result, ask, reveal], api_visibility="private", queue=False)
        reveal.click(lambda: (gr.Column(visible=True), gr.Button(visible=False)), outputs=[result, reveal],
                     api_visibility="private", queue=False)
    return shown


def _note() -> gr.Markdown:
    return gr.Markdown(latex_delimiters=LATEX)


def _gallery(label: str, number: int, columns: int, elem_id: str | None = None) -> gr.Gallery:
    """A lesson's output gallery: not an upload target (the handout reads it as an input, which would otherwise make
    it one), whole pictures (grids are never cropped to square tiles), captions readable (``CSS`` in demo.app)."""
    return gr.Gallery(label=label, columns=columns, height="auto", elem_classes=["pixelated", "lesson-gallery"],
                      elem_id=elem_id or f"lesson-{number}-view", interactive=False, object_fit="contain")


PLAYGROUND_LINKS = {  # lessons that continue in the Playground tab: what to do there, and the view it opens
    2: ("Open the Playground: train a model on points yourself, then its \"Loss against t\" view", "pg-loss-t"),
    5: ("Open the Playground: after training, its \"DDPM against DDIM paths\" view", "pg-paths"),
}


def _views(studio: Studio, number: int, results: LessonResults) -> list:
    """The live view of lesson ``number`` (1-based): its controls, its Show me button and its outputs
    (returned: the handout reads them)."""
    _show_me = functools.partial(_show_me_button, results=results)
    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", render=False)
    if number == 1:
        seed.render()
        return _show_me("a digit at six noise levels", number, make_lesson_forward(studio), [seed], lambda: [
            gr.Image(label="one digit at six noise levels", elem_id="lesson-1-view", **PICTURE),
            LockedPlot(label="the schedule: beta_t (log axis), alpha-bar_t and log-SNR"), _note()], "lesson_forward")
    elif number == 2:
        return _show_me("the error against t on held-out digits", number, make_lesson_denoising(studio), [], lambda: [
            LockedPlot(label="the embedded DDPM's error against t", elem_id="lesson-2-view"),
            _gallery("x_t, predicted noise and predicted x0 at five t", number, 6, "lesson-2-steps"), _note()],
            "lesson_denoising")
    elif number == 3:
        seed.render()
        return _show_me("the reverse process, 50 DDPM steps", number, make_lesson_sampling(studio), [seed], lambda: [
            gr.Image(label="x_t (top) and predicted x0 (bottom)", elem_id="lesson-3-view", **PICTURE), _note(),
            _note(), gr.Image(label="that step's update as pictures: they add up to x_{t−1} (one grey scale for all)",
                              elem_id="lesson-3-update", **PICTURE),
            gr.Image(label="progressive generation (Ho et al. 2020, Fig. 6): x̂0 of four samples as t falls",
                     elem_id="lesson-3-progressive", **PICTURE)], "lesson_sampling")
    elif number == 4:
        seed.render()
        return _show_me("the sampler race", number, make_lesson_race(studio), [seed], lambda: [
            gr.Image(label="predicted x0 by sampler (rows) and noise level (columns)", elem_id="lesson-4-view",
                     **PICTURE), _note()], "lesson_race")  # the note's maths ($x_T$) is typeset
    elif number == 5:
        seed.render()
        return _show_me("the same seed twice, and DDIM's eta", number, make_lesson_determinism(studio), [seed],
                 lambda: [_gallery("one seed, four runs", number, 4), _note()], "lesson_determinism")
    elif number == 6:
        return _show_me("the autoencoder and the cost of a step", number, make_lesson_latent(studio), [],
                 lambda: [_gallery("the autoencoder", number, 4), _note(),
                          gr.Image(label="one image through autoencoders of f = 1, 2, 4, 8 (Rombach et al. 2022, "
                                         "Sec. 4.1)", elem_id="lesson-6-factors", **PICTURE),
                          LockedPlot(label="cost against reachable quality, by f", elem_id="lesson-6-trade"),
                          _note()], "lesson_latent")
    elif number in (7, 8):
        default = "a large red circle top left" if number == 7 else "a blue star"  # one object: the model's strength
        prompt = gr.Textbox(value=default, label="Prompt", max_length=200)
        seed.render()
        if number == 7:
            return _show_me("cross-attention per word", number, make_lesson_text(studio), [prompt, seed],
                     lambda: [_gallery("per token: where the model looked", number, 6), _note()], "lesson_text")
        else:
            return _show_me("guidance at one step, w from 0 to 10", number, make_lesson_guidance(studio), [prompt, seed],
                     lambda: [_gallery("one step, decomposed", number, 6), _note()], "lesson_guidance")
    elif number == 9:
        seed.render()
        return _show_me("a held-out pair, a two-object prompt and the nearest training digits", number,
                        make_lesson_limits(studio), [seed],
                        lambda: [_gallery("where the model fails", number, 4),
                                 _gallery("memorisation: each new digit (left) beside its nearest training digit",
                                          number, 8, "lesson-9-copies"), _note()], "lesson_limits")
    elif number == 10:
        prompt = gr.Textbox(value="a red circle left of a blue square", label="Prompt (two objects)", max_length=200)
        seed.render()
        return _show_me("layout off, then on", number, make_lesson_layout(studio), [prompt, seed],
                        lambda: [_gallery("the same prompt and seed: layout off, then on", number, 5), _note()],
                        "lesson_layout")
    return []


# ----- the handout -----
def _picture_of(value: object) -> np.ndarray | None:
    """A shown picture as uint8: an image's array, a gallery item's file, or a plot's PNG data URL."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, str) and value:  # a gallery file in gradio's cache
        return read_image(value)
    plot = getattr(value, "plot", None)  # a matplotlib plot as gradio sends it: a PNG or WebP data URL
    if isinstance(plot, str) and plot.startswith("data:image/"):
        return read_image(data_url_bytes(plot))
    return None


def make_lessons_handout(views: list[tuple[int, gr.components.Component]], exports: ExportDir):
    def lessons_handout(*values: object) -> str:
        """The handout (one HTML file) of every lesson with what the class generated in its views."""
        shown: dict[int, LessonPictures] = {}
        with user_errors():
            for (number, component), value in zip(views, values, strict=True):
                got = shown.setdefault(number, LessonPictures())
                if value is None or (isinstance(value, (str, list)) and not value):
                    continue
                label = getattr(component, "label", None) or f"lesson {number}"
                if isinstance(component, gr.Markdown):
                    got.notes.append(str(value))
                elif isinstance(component, gr.Gallery):
                    for item, caption in value:
                        picture = _picture_of(item)
                        if picture is not None:
                            got.pictures.append((picture, caption or label))
                else:
                    picture = _picture_of(value)
                    if picture is not None:
                        got.pictures.append((picture, label))
            path = exports.path("diffusion-classroom-handout.html")
            path.write_text(handout_html(LESSONS, shown), encoding="utf-8")
        return str(path)

    # one named parameter per view (lesson3_gallery1, lesson3_note1, ...): the API page names what each input is
    names, counts = [], {}
    for number, component in views:
        kind = {gr.Markdown: "note", gr.Gallery: "gallery"}.get(type(component), "picture")
        counts[number, kind] = counts.get((number, kind), 0) + 1
        names.append(f"lesson{number}_{kind}{counts[number, kind]}")
    lessons_handout.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=object) for name in names],
        return_annotation=str)
    return lessons_handout


def lesson_from_link(request: gr.Request) -> gr.Walkthrough:
    """``?lesson=N`` (1 to the number of lessons) opens lesson N; anything else leaves the first open."""
    value = request.query_params.get("lesson", "") if request is not None else ""
    try:
        number = int(value)
    except ValueError:
        return gr.Walkthrough(selected=1)
    return gr.Walkthrough(selected=number if 1 <= number <= len(LESSONS) else 1)


def make_lessons_warm_up(results: LessonResults):
    async def lessons_warm_up() -> AsyncIterator[str]:
        """Run every lesson's Show me once with its defaults, so that in class each answers from memory."""
        lines: list[str] = []
        async for done, total, line in results.warm():
            lines.append(line)
            yield f"Warming up: {done} of {total} done.\n\n" + "\n".join(f"- {item}" for item in lines)
        yield (f"Warm: every Show me with its defaults answers at once from now on ({len(results)} results kept).\n\n"
               + "\n".join(f"- {item}" for item in lines))

    return lessons_warm_up


def build_lessons_tab(studio: Studio, app: gr.Blocks, exports: ExportDir,
                      results: LessonResults) -> dict[int, gr.Button]:
    """The tab; ``results`` keeps each Show me's final results (the warm-up fills it). Returns the buttons of the
    lessons that continue in the Playground (lesson number -> button), for :func:`link_to_playground` once that
    tab exists."""
    views: list[tuple[int, gr.components.Component]] = []  # every lesson's outputs, for the handout
    links: dict[int, gr.Button] = {}
    # ----- layout -----
    gr.Markdown("## Lessons\nA course through DDPM (Ho et al. 2020) and latent diffusion (Rombach et al. 2022). "
                "Every **Show me** runs the embedded models live. Link to a lesson with `?lesson=N`.",
                elem_id="lessons-intro")
    with gr.Walkthrough(selected=1, elem_id="lessons") as walkthrough:
        for number, lesson in enumerate(LESSONS, start=1):
            with gr.Step(f"{number}. {lesson.short}", id=number, elem_id=f"lesson-{number}"):
                gr.Markdown(f"### {lesson.title}\n" + lesson.text, latex_delimiters=LATEX, elem_classes=["lesson-text"])
                views += [(number, component) for component in _views(studio, number, results)]
                if number in PLAYGROUND_LINKS:
                    links[number] = gr.Button(PLAYGROUND_LINKS[number][0], variant="secondary",
                                              elem_id=f"lesson-{number}-playground")
                with gr.Group():
                    gr.Markdown(f"**Question for the class.** {lesson.question}", latex_delimiters=LATEX)
                    reveal = gr.Button("Reveal the answer", size="sm", elem_id=f"lesson-{number}-reveal")
                    answer = gr.Markdown(f"**Answer.** {lesson.answer}", latex_delimiters=LATEX, visible=False,
                                         elem_id=f"lesson-{number}-answer")
                with gr.Row():
                    back = gr.Button("← Previous", interactive=number > 1)
                    forward = gr.Button("Next →", interactive=number < len(LESSONS))
                # ----- events (of this lesson) -----
                reveal.click(lambda: gr.Markdown(visible=True), outputs=answer, api_visibility="private", queue=False)
                back.click(lambda n=number: gr.Walkthrough(selected=max(1, n - 1)), outputs=walkthrough,
                           api_visibility="private", queue=False)
                forward.click(lambda n=number: gr.Walkthrough(selected=min(len(LESSONS), n + 1)), outputs=walkthrough,
                              api_visibility="private", queue=False)
    with gr.Row():
        handout = gr.Button("Export handout (HTML): every lesson with the pictures generated here", elem_id="lessons-handout")
        handout_file = gr.File(label="Handout", interactive=False, elem_id="lessons-handout-file")
    with gr.Accordion("Before class: warm up", open=False, elem_id="lessons-warm"):
        gr.Markdown("Runs every lesson's **Show me** once with its default inputs (a few minutes). From then on each "
                    "answers at once, with the same pictures, however busy the app is. `python app.py --warm` does "
                    "the same at start-up.")
        warm = gr.Button("Warm up every Show me", elem_id="lessons-warm-up")
        warm_status = gr.Markdown(elem_id="lessons-warm-status")
    # ----- events -----
    app.load(lesson_from_link, outputs=walkthrough, api_visibility="private", queue=False)
    handout.click(make_lessons_handout(views, exports), inputs=[component for _, component in views],
                  outputs=handout_file, api_name="lessons_handout")
    warm.click(make_lessons_warm_up(results), outputs=warm_status, api_name="lessons_warm_up")
    return links


def link_to_playground(links: dict[int, gr.Button], tabs: gr.Tabs, playground_views: gr.Tabs) -> None:
    """Each lesson's Playground button opens the Playground tab (one of the app's ``tabs``) at the view it names
    (one of ``playground_views``)."""
    for number, button in links.items():
        view = PLAYGROUND_LINKS[number][1]
        button.click(lambda view=view: (gr.Tabs(selected="playground"), gr.Tabs(selected=view)),
                     outputs=[tabs, playground_views], api_visibility="private", queue=False)
