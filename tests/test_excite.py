"""Attend-and-Excite (diffusion.excite): the loss, the latent update, the switch through the one loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion.excite import ExciteConfig, excite_loss, object_attention, subject_indices
from diffusion.loading import load_pipeline
from diffusion.pipeline import decode_latents, latent_steps
from diffusion.prompts import token_labels
from diffusion.recipe import Recipe, make_recipe
from diffusion.registry import local_card
from diffusion.request import SampleRequest, check_request

PROMPT = "red circle left of blue square"  # the tiny text encoder reads 6 words


@pytest.fixture(scope="module")
def tiny(tiny_sd_dir):
    return load_pipeline(local_card(tiny_sd_dir), torch.device("cpu"))


def test_object_tokens_are_the_shape_nouns(tiny) -> None:
    tokens = token_labels(tiny, PROMPT)
    assert tokens[0] == "[BOS]" and tokens[-1] == "[EOS]"
    indices = subject_indices(tokens)
    assert [tokens[i] for i in indices] == ["circle", "square"]
    assert subject_indices(token_labels(tiny, "a red one")) == []


def test_the_loss_is_the_most_neglected_objects_shortfall() -> None:
    """Two words over a 4x4 image ([BOS], word 1, word 2, [EOS], padding). Word 1 takes more attention than
    word 2 everywhere: after the re-normalisation over the words (softmax of 100 x), word 2 wins nowhere and
    the loss is its shortfall. A word that wins at one position only is smoothed down."""
    maps = torch.zeros(1, 5, 4, 4)
    maps[0, 0] = 0.5
    maps[0, 1] = 0.05
    maps[0, 2] = 0.001
    peaks = object_attention(maps, [[1, 2]], [3])
    assert float(peaks[0][0]) > 0.99 and float(peaks[0][1]) < 0.01
    assert float(excite_loss(peaks[0])) == pytest.approx(1 - float(peaks[0][1]))
    maps[0, 1] = 0.001
    maps[0, 1, 1, 2] = 0.4  # word 1 wins at one position only, word 2 everywhere else
    maps[0, 2] = 0.05
    peaks = object_attention(maps, [[1, 2]], [3])
    assert 0.4 < float(peaks[0][0]) < 0.8  # the Gaussian's centre weight (sigma 0.5): not a full peak
    assert float(excite_loss(peaks[0])) == pytest.approx(1 - float(peaks[0][0]))


def test_schedule_scales_with_steps() -> None:
    assert ExciteConfig.for_steps(50) == ExciteConfig(20.0, 25, {0: 0.05, 10: 0.5, 20: 0.8}, 5)
    config = ExciteConfig.for_steps(25)
    assert config.last_index == 12 and config.refine_at == {0: 0.05, 5: 0.5, 10: 0.8}


def _run(model, **changes) -> list:
    request = dataclasses.replace(SampleRequest("ddim", 10, 2, 3, prompt=PROMPT, guidance_scale=4.0), **changes)
    return list(latent_steps(model, request))


@pytest.mark.slow
def test_off_is_the_plain_loop_and_on_edits_the_first_steps_and_lowers_the_loss(tiny) -> None:
    off = _run(tiny)
    assert torch.equal(_run(tiny, attend_excite=False)[-1].prev_sample, off[-1].prev_sample)
    assert all(r.excite is None for r in off)
    on = _run(tiny, attend_excite=True)
    edited = [r for r in on if r.excite is not None]
    assert [r.index for r in edited] == list(range(5))  # the first half of 10 steps
    assert torch.equal(on[0].sample, off[0].sample) is False  # z_T itself is nudged at step 0 (refinement)
    assert not torch.equal(on[-1].prev_sample, off[-1].prev_sample)
    # the update lowers the loss it descends, on average over the edited steps and images
    before = sum(sum(r.excite.loss_before) for r in edited)
    after = sum(sum(r.excite.loss_after) for r in edited)
    assert after < before
    # reproducible: the same request gives the same bytes
    assert torch.equal(_run(tiny, attend_excite=True)[-1].prev_sample, on[-1].prev_sample)
    images = decode_latents(tiny, on[-1].prev_sample)
    assert torch.isfinite(images).all()


def test_prompts_without_object_words_are_left_alone(tiny) -> None:
    plain = dataclasses.replace(SampleRequest("ddim", 6, 1, 0, prompt="a red one", guidance_scale=4.0))
    off = list(latent_steps(tiny, plain))
    on = list(latent_steps(tiny, dataclasses.replace(plain, attend_excite=True)))
    assert torch.equal(on[-1].prev_sample, off[-1].prev_sample)


def test_the_switch_is_checked_and_travels_in_recipes() -> None:
    with pytest.raises(ValueError, match="attend_excite must be true or false"):
        check_request(SampleRequest(prompt="a circle", attend_excite="yes"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unconditional"):
        check_request(SampleRequest(attend_excite=True), conditional=False)
    request = SampleRequest("ddim", 10, 1, 0, prompt=PROMPT, guidance_scale=4.0, attend_excite=True)
    recipe = make_recipe("ldm-shapes", request, {"num_train_timesteps": 1000})
    assert Recipe.from_json(recipe.to_json()).request == request
    with pytest.raises(ValueError, match="attend_excite must be true or false"):
        Recipe.from_json(recipe.to_json().replace('"attend_excite": true', '"attend_excite": 1'))


def test_through_the_studio_and_the_work_budget(studio) -> None:
    """The Studio runs it for text models, refuses it for pixel models, and counts its extra passes."""
    import numpy as np

    from diffusion.work_budget import EXCITE_PASSES

    # against the plain model (a two-object prompt is otherwise drawn by layout, which Attend-and-Excite replaces)
    request = SampleRequest("ddim", 4, 2, 5, prompt=PROMPT, guidance_scale=4.0, layout="off")
    off = studio.sample("local/tiny-sd", request)
    on = studio.sample("local/tiny-sd", dataclasses.replace(request, attend_excite=True))
    assert off.shape == on.shape and not np.array_equal(off, on)
    with pytest.raises(ValueError, match="unconditional"):
        studio.sample("local/tiny-ddpm", SampleRequest("ddim", 4, 1, 0, attend_excite=True))
    card = studio.card("local/tiny-sd")
    budget = studio.work_budget_s
    try:
        plain_s = request.n * request.steps * 2 * card.image_step_ms / 1000
        studio.work_budget_s = plain_s  # exactly the plain request's estimate
        studio.check_budget(card, [request])
        with pytest.raises(ValueError, match="needs about"):
            studio.check_budget(card, [dataclasses.replace(request, attend_excite=True)])
        studio.work_budget_s = plain_s + request.n * EXCITE_PASSES * 2 * card.image_step_ms / 1000
        studio.check_budget(card, [dataclasses.replace(request, attend_excite=True)])  # 2 edited steps of 4
    finally:
        studio.work_budget_s = budget
