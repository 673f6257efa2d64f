"""The Lessons tab: every lesson's Show me through gradio_client (tiny models standing in for the embedded
ones), the new denoising-error view, the step cost, and the lesson texts."""

from __future__ import annotations

import numpy as np
import pytest

from demo.lessons import LESSONS
from tests.test_app import load

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def served(serve):
    return serve(queue_size=8)


def test_nine_lessons_in_the_papers_order_each_with_a_question_and_an_answer() -> None:
    assert [lesson.title.split(". ", 1)[0] for lesson in LESSONS] == [str(i) for i in range(1, 10)]
    for lesson in LESSONS:
        assert lesson.question.strip() and lesson.answer.strip()
        assert lesson.text.count("$$") <= 4  # at most two displayed equations
    assert "Eq. 4" in LESSONS[0].text and "Eq. 14" in LESSONS[1].text and "Eq. 6" in LESSONS[7].text


def test_the_denoising_error_falls_as_t_grows_on_held_out_digits(studio) -> None:
    from diffusion.studio import ASSETS

    from PIL import Image

    digit = np.asarray(Image.open(ASSETS / "examples" / "digit-3.png").convert("L"))
    result = studio.denoising_error("local/tiny-ddpm", images=[digit, digit[::-1]], points=6, shown=(0, 99, 500))
    assert result.timesteps.shape == result.error.shape == result.spread.shape == (6,)
    assert result.timesteps[0] == 0 and result.timesteps[-1] == 99 and result.images == 2  # the tiny model's T = 100
    assert np.isfinite(result.error).all() and (result.error >= 0).all()
    assert result.shown == [0, 99] and len(result.examples) == 2  # t = 500 is past T: not shown
    x_t, eps, x0 = result.examples[0]
    assert x_t.dtype == eps.dtype == x0.dtype == np.uint8 and x_t.shape == eps.shape == x0.shape
    with pytest.raises(ValueError, match="pixel models"):
        studio.denoising_error("local/tiny-sd")


def test_the_shipped_ddpm_has_learned_the_noise_where_it_can(tmp_path) -> None:
    """The lesson's claim on the real model, on held-out digits: the error is largest at t = 0 (0.55 measured; 1 is
    predicting zero) and falls toward 0 as t grows."""
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    studio = Studio(Registry.default(), device="cpu", cache_bytes=0)
    result = studio.denoising_error("ddpm-mnist", points=5, shown=())
    assert result.images == 64
    assert result.error[0] > 0.5 and result.error[-1] < 0.05
    assert np.all(np.diff(result.error) < 0)  # falls as t grows
    cost = studio.step_cost("ddpm-mnist")
    assert cost.shape == (1, 32, 32) and cost.flops > 1e6 and cost.ms > 0


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
])
def test_every_show_me_runs_the_models(served, api_name, args) -> None:
    _, client, _ = served
    result = client.predict(*args, api_name=api_name)
    assert result is not None
    first = result[0] if isinstance(result, tuple) else result
    if isinstance(first, list):  # a gallery
        assert first and all(load(item["image"]).size for item in first)
    elif isinstance(first, (str, dict)) and api_name not in ("/lesson_denoising",):
        assert load(first).size


def test_same_seed_is_identical_in_the_determinism_lesson(served) -> None:
    _, client, _ = served
    gallery, note = client.predict(3, api_name="/lesson_determinism")
    assert "identical, byte for byte" in note
    assert np.array_equal(load(gallery[0]["image"]), load(gallery[1]["image"]))


def test_a_latent_step_costs_less_than_the_same_unet_on_pixels(studio) -> None:
    latent = studio.step_cost("local/tiny-sd")
    pixels = studio.step_cost("local/tiny-sd", in_pixels=True)
    assert pixels.shape[0] == 3 and pixels.shape[1] > latent.shape[1]
    assert pixels.flops > 2 * latent.flops  # the tiny autoencoder halves each side: 4x the area
    assert abs(pixels.parameters - latent.parameters) < 0.01 * latent.parameters  # the same architecture
    with pytest.raises(ValueError, match="latent model"):
        studio.step_cost("local/tiny-ddpm", in_pixels=True)
