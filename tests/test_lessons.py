"""The Lessons tab: every lesson's Show me through gradio_client (tiny models standing in for the embedded
ones), the new denoising-error view, the step cost, and the lesson texts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from demo.lessons import LESSONS
from tests.helpers import load

gradio_client = pytest.importorskip("gradio_client")


def test_ten_lessons_in_the_papers_order_each_with_a_question_and_an_answer() -> None:
    assert [lesson.title.split(". ", 1)[0] for lesson in LESSONS] == [str(i) for i in range(1, 11)]
    for lesson in LESSONS:
        assert lesson.question.strip() and lesson.answer.strip()
        assert lesson.text.count("$$") <= 4  # at most two displayed equations
    assert "Eq. 4" in LESSONS[0].text and "Eq. 14" in LESSONS[1].text and "Eq. 6" in LESSONS[7].text


def test_the_denoising_error_falls_as_t_grows_on_held_out_digits(studio) -> None:
    from diffusion.studio import ASSETS

    from PIL import Image

    digit = np.asarray(Image.open(ASSETS / "examples" / "digit-3.png").convert("L"))
    result = next(studio.lessons.denoising_error("local/tiny-ddpm", images=[digit, digit[::-1]], points=6, shown=(0, 99, 500)))
    assert result.timesteps.shape == result.error.shape == result.spread.shape == (6,)
    assert result.timesteps[0] == 0 and result.timesteps[-1] == 99 and result.images == 2  # the tiny model's T = 100
    assert np.isfinite(result.error).all() and (result.error >= 0).all()
    assert result.shown == [0, 99] and len(result.examples) == 2  # t = 500 is past T: not shown
    x_t, eps, x0 = result.examples[0]
    assert x_t.dtype == eps.dtype == x0.dtype == np.uint8 and x_t.shape == eps.shape == x0.shape
    with pytest.raises(ValueError, match="pixel models"):
        studio.lessons.denoising_error("local/tiny-sd")


@pytest.mark.slow
def test_the_shipped_ddpm_has_learned_the_noise_where_it_can(tmp_path) -> None:
    """The lesson's claim on the real model, on held-out digits: the error is largest at t = 0 (0.55 measured; 1 is
    predicting zero) and falls toward 0 as t grows."""
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    studio = Studio(Registry.default(), device="cpu", cache_bytes=0)
    result = next(studio.lessons.denoising_error("ddpm-mnist", points=5, shown=()))
    assert result.images == 64
    assert result.error[0] > 0.5 and result.error[-1] < 0.05
    assert np.all(np.diff(result.error) < 0)  # falls as t grows
    cost = next(studio.lessons.step_cost("ddpm-mnist"))
    assert cost.shape == (1, 32, 32) and cost.flops > 1e6 and cost.ms > 0


@pytest.mark.slow
def test_the_shipped_ddpm_draws_new_digits_not_copies_of_its_training_set() -> None:
    """Lesson 9's memorisation view on the real model: samples stay about as far from the training digits as real
    held-out digits are, and near copies are rare (the DDPM gate measured 4 in 1,000)."""
    from diffusion.registry import Registry
    from diffusion.studio import SampleRequest, Studio

    studio = Studio(Registry.default(), device="cpu", cache_bytes=0)
    digits = studio.sample("ddpm-mnist", SampleRequest(sampler="ddim", steps=25, n=16, seed=0))
    copies = studio.lessons.nearest_copies(digits)
    assert copies.nearest.shape == copies.samples.shape == (16, 32, 32) and copies.held_out_distances.shape == (64,)
    assert copies.near_copies <= 2
    assert np.median(copies.distances) > 0.6 * np.median(copies.held_out_distances)
    # a copier is caught: training digits themselves are at distance 0, all near copies
    train = copies.nearest[:4]
    assert studio.lessons.nearest_copies(train).near_copies == 4
    with pytest.raises(ValueError, match="32x32"):
        studio.lessons.nearest_copies(np.zeros((2, 8, 8), np.uint8))


@pytest.mark.parametrize("api_name, args", [
    ("/lesson_forward", (0,)),
    ("/lesson_denoising", ()),
    ("/lesson_sampling", (0,)),
    ("/lesson_race", (0,)),
    ("/lesson_determinism", (0,)),
    ("/lesson_latent", ()),
    ("/lesson_text", ("a red circle", 0)),
    ("/lesson_guidance", ("a red circle", 0)),
    ("/lesson_limits", (0,)),
    ("/lesson_layout", ("a red circle left of a blue square", 0)),
])
@pytest.mark.slow
def test_every_show_me_runs_the_models(served, api_name, args) -> None:
    _, client, _ = served
    result = client.predict(*args, api_name=api_name)
    assert result is not None
    first = result[0] if isinstance(result, tuple) else result
    if isinstance(first, list):  # a gallery
        assert first and all(load(item["image"]).size for item in first)
    elif isinstance(first, (str, dict)) and api_name not in ("/lesson_denoising",):
        assert load(first).size


@pytest.mark.slow
def test_same_seed_is_identical_in_the_determinism_lesson(served) -> None:
    _, client, _ = served
    gallery, note = client.predict(3, api_name="/lesson_determinism")
    assert "identical, byte for byte" in note
    assert np.array_equal(load(gallery[0]["image"]), load(gallery[1]["image"]))


def test_a_latent_step_costs_less_than_the_same_unet_on_pixels(studio) -> None:
    latent = next(studio.lessons.step_cost("local/tiny-sd"))
    pixels = next(studio.lessons.step_cost("local/tiny-sd", in_pixels=True))
    assert pixels.shape[0] == 3 and pixels.shape[1] > latent.shape[1]
    assert pixels.flops > 2 * latent.flops  # the tiny autoencoder halves each side: 4x the area
    assert abs(pixels.parameters - latent.parameters) < 0.01 * latent.parameters  # the same architecture
    with pytest.raises(ValueError, match="latent model"):
        studio.lessons.step_cost("local/tiny-ddpm", in_pixels=True)


def test_every_figure_reads_on_a_projector_and_tells_lines_apart_without_colour(studio) -> None:
    from diffusers import DDPMScheduler
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from demo.figures import (
        MIN_POINTS,
        compression_figure,
        field_figure,
        loss_by_t_figure,
        paths_figure,
        schedule_figure,
    )
    from demo.lesson_views.ddpm import error_figure
    from diffusion.studio import NoiseField, ParticlePaths, ScheduleCurves

    curves = ScheduleCurves.of(DDPMScheduler(num_train_timesteps=100))
    family = {name: ScheduleCurves.of(DDPMScheduler(num_train_timesteps=100, beta_schedule=schedule))
              for name, schedule in (("linear", "linear"), ("cosine", "squaredcos_cap_v2"))}
    grid = np.stack(np.meshgrid(np.linspace(-3, 3, 5), np.linspace(-3, 3, 5)), -1)
    path = np.cumsum(np.random.default_rng(0).normal(size=(11, 3, 2)), 0)
    ts = np.linspace(0, 99, 10)
    trade = next(studio.lessons.compression("local/tiny-sd", np.zeros((16, 16, 3), np.uint8), repeats=1))
    bounds = {1: {"exact": 0.97}, 2: {"psnr": 35.0, "exact": 0.95}, 4: {"psnr": 31.0, "exact": 0.9},
              8: {"psnr": 24.0, "exact": 0.6}}
    trade = dataclasses.replace(trade, rows=tuple(dataclasses.replace(r, bound=bounds[r.factor]) for r in trade.rows))
    figures = [
        schedule_figure(curves, 40.0, family),
        field_figure(NoiseField(10, 0.9, grid, grid, grid), grid.reshape(-1, 2), 3.2, True),
        paths_figure(ParticlePaths(path, path + 1, path - 1, 10), None, 3.2),
        loss_by_t_figure(ts, 1 - ts / 100, curves.alphas_cumprod),
        error_figure(ts, 1 - ts / 100, np.full(10, 0.1)),
        compression_figure(trade),
    ]
    for fig in figures:
        FigureCanvasAgg(fig).draw()  # makes the tick labels
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert texts
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < MIN_POINTS]
        assert not small, small
        assert fig.patch.get_facecolor()[:3] == (1.0, 1.0, 1.0) and fig.patch.get_alpha() == 1.0  # dark mode
    # the classic schedules beside the model's: each line has its own style, not only its own colour
    styles = [line.get_linestyle() for line in figures[0].axes[1].get_lines()[:-2]]
    assert len(styles) == 2 and len(set(styles)) == 2
    # the factors: one point each, told apart by marker as well as colour, each labelled with its f
    markers = [line.get_marker() for line in figures[-1].axes[0].get_lines()]
    assert len(markers) == 4 and len(set(markers)) == 4
    labels = " ".join(t.get_text() for t in figures[-1].axes[0].texts)
    assert all(f"f = {f}" in labels for f in (1, 2, 4, 8)) and "lossless" in labels and "24.0 dB" in labels


VOID = {"meta", "img", "br", "hr", "input", "link"}


def check_html(text: str) -> list[str]:
    """Every element closed in order (void elements aside); returns the start tags seen."""
    from html.parser import HTMLParser

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.seen: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.seen.append(tag)
            if tag not in VOID:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
            self.stack.pop()

    checker = Checker()
    checker.feed(text)
    checker.close()
    assert not checker.stack, checker.stack
    return checker.seen


def test_every_formula_of_the_lessons_is_drawn_in_the_handout() -> None:
    """Each $...$ and $$...$$ of every lesson's text, question and answer is drawn by mathtext (no fallback to
    source), in the order and number they appear."""
    from markdown_it import MarkdownIt

    from demo.handout import _MATH, render_markdown

    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    for lesson in LESSONS:
        for text in (lesson.text, lesson.question, lesson.answer):
            formulas = [m.group(1) or m.group(2) for m in _MATH.finditer(text)]
            html_text = render_markdown(text, markdown)
            assert html_text.count('<img class="math') == len(formulas), lesson.title
            assert 'class="tex"' not in html_text, lesson.title  # no formula fell back to its source
    tables = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n", markdown)
    assert "<table>" in tables and "|" not in tables


def test_the_handout_is_one_valid_html_file_with_every_lesson_and_its_pictures() -> None:
    import base64
    import io
    import re

    from PIL import Image

    from demo.handout import LessonPictures, handout_html

    picture = np.zeros((12, 20, 3), np.uint8)
    picture[:, 10:] = 255
    shown = {1: LessonPictures([(picture, "one digit at six noise levels")], ["$t = 0$: a note with *emphasis*"]),
             4: LessonPictures([(picture[..., 0], "the race")], [])}
    text = handout_html(LESSONS, shown)
    tags = check_html(text)
    assert text.startswith("<!DOCTYPE html>") and "script" not in tags and "http" not in text.split("<body>")[0]
    for number, lesson in enumerate(LESSONS, start=1):
        assert f'<section id="lesson-{number}">' in text and lesson.title in text
    assert text.count("<details><summary>Answer</summary>") == len(LESSONS)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0]))))
    assert np.array_equal(decoded, picture)  # embedded losslessly
    assert "<em>emphasis</em>" in text  # Markdown rendered
    # the maths drawn as SVG pictures (their source as alt text), none left as TeX in the text
    assert '<img class="math" style="height: ' in text and 'alt="t = 0"' in text
    visible = re.sub(r"<[^>]+>", "", text)
    assert "$" not in visible and "\\frac" not in visible and "\\bar" not in visible
    svg = base64.b64decode(re.search(r'alt="t = 0" src="data:image/svg\+xml;base64,([^"]+)"', text).group(1))
    assert svg.startswith(b"<?xml") and b"<path" in svg and b"<text" not in svg  # glyphs as paths: no fonts
    assert text.count("Not shown in class") == len(LESSONS) - 2
    assert "<script>" not in handout_html(LESSONS, {2: LessonPictures([], ["<script>alert(1)</script>"])})


@pytest.mark.slow
def test_the_layout_lesson_shows_the_plain_runs_words_then_the_regions(served) -> None:
    _, client, _ = served
    gallery, note = client.predict("a red circle left of a blue square", 3, api_name="/lesson_layout")
    captions = [item["caption"] for item in gallery]
    assert captions[0] == "layout off: the plain model" and "layout on: one region per object" in captions
    words = [c.split(": ", 1)[1].split(" · ")[0] for c in captions if c.startswith("layout off, step")]
    assert {"red", "circle", "left"} <= set(words)  # the tiny test model reads the first few words only
    assert [c for c in captions if c.startswith("region")] == ["region 1", "region 2"]
    assert "Layout: a red circle at the" in note
    # a prompt with one object has no layout: the lesson says so
    gallery, note = client.predict("a red circle", 3, api_name="/lesson_layout")
    assert "names no two objects" in note


def test_every_figure_a_lesson_quotes_about_the_shipped_model_comes_from_its_gate_file() -> None:
    """Lessons quoted hand-typed gate figures of older weights (0.905 exact, 37% / 19%); now they are filled from
    assets/ldm-shapes/gate_results.json at start-up, and any other number in [0, 1] or percentage there fails."""
    import re

    from demo.lessons import _LESSONS, fill
    from diffusion.studio import ASSETS, gate_figures

    assert (ASSETS / "ldm-shapes" / "gate_results.json").is_file()
    figures = gate_figures("ldm-shapes")
    allowed = {"10%", "0.02"}  # the caption dropout of training; the standard error of an accuracy near 0.9
    for template, lesson in zip(_LESSONS[5:], LESSONS[5:], strict=True):
        for field in ("text", "question", "answer"):
            shown_text = getattr(lesson, field)
            assert "[[" not in shown_text and "(not measured)" not in shown_text
            assert shown_text == fill(getattr(template, field), figures)
            quoted = set(re.findall(r"\b0\.\d{2,3}\b|\b\d{1,3}%", re.sub(r"\[\[[^\]]+\]\]", "", getattr(template, field))))
            assert quoted <= allowed, (lesson.title, field, quoted - allowed)  # no figure typed by hand
    assert f"{figures['sweep.4.exact']:.3f}" in LESSONS[7].text
    assert f"{round(100 * figures['pairs.relation'])}%" in LESSONS[9].text


def test_a_predict_question_names_what_the_run_shows() -> None:
    """Predict, then reveal: the lessons that ask first (the race, the layout) describe the run they hide, lane by
    lane for the race (its lanes and steps as the Studio races them)."""
    from diffusion.studio import DEFAULT_RACE, SAMPLERS

    asking = {number: lesson.predict for number, lesson in enumerate(LESSONS, start=1) if lesson.predict}
    assert set(asking) == {4, 10}
    for sampler, steps in DEFAULT_RACE:
        title = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp-2m": "DPM-Solver++", "euler": "Euler"}[sampler]
        assert f"{title} with {steps}" in asking[4], (sampler, SAMPLERS[sampler].title)
    assert "a red circle left of a blue square" in asking[10]
