"""The app-facing service: streaming, the step-by-step trajectory, schedules, NaN guard."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.images import make_grid
from diffusion.request import SampleRequest


def test_generate_streams_previews_then_the_result(studio) -> None:
    updates = list(studio.generate("local/tiny-ddpm", SampleRequest("ddim", 6, n=3, seed=1), previews=3))
    *progress, final = updates
    assert [u.step for u in progress] == [1, 2, 3, 4, 5]  # one update per step
    assert [u.step for u in progress if u.preview is not None] == [1, 3, 5]  # about `previews` decoded
    assert not any(u.done for u in progress)
    assert all(u.preview is None for u in studio.generate("local/tiny-ddpm", SampleRequest("ddim", 6, n=1),
                                                            previews=0))
    assert final.done and final.images.shape == (3, 8, 8) and final.images.dtype == np.uint8
    assert final.model_calls == 6 and final.step == final.num_steps == 6
    np.testing.assert_array_equal(final.images, studio.sample("local/tiny-ddpm", SampleRequest("ddim", 6, n=3, seed=1)))


def test_trajectory_records_every_step_for_pixel_and_latent_models(studio) -> None:
    *_, (done, total, traj) = studio.trajectory("local/tiny-ddpm", SampleRequest("ddpm", 4, seed=2))
    assert done == total == len(traj.steps) == 4
    assert [v.index for v in traj.steps] == [0, 1, 2, 3]
    assert all(v.x_t.shape == v.noise.shape == v.pred_x0.shape == (8, 8) for v in traj.steps)
    assert traj.steps[-1].alpha_prod_t_prev == 1.0
    assert traj.steps[0].alpha_prod_t_prev == traj.steps[1].alpha_prod_t
    *_, (_, _, latent) = studio.trajectory("local/tiny-sd", SampleRequest("ddim", 2, seed=2, prompt="a star",
                                                                            guidance_scale=3.0))
    assert latent.steps[0].pred_x0.shape == (16, 16, 3) and latent.steps[0].x_t.shape == (8, 8, 3)
    assert latent.final.shape == (16, 16, 3)


def test_trajectory_of_several_images_keeps_grids_and_matches_the_batch(studio) -> None:
    request = SampleRequest("ddim", 3, seed=4)
    *_, (_, _, traj) = studio.trajectory("local/tiny-ddpm", request, images=4)
    # 4 images of 8x8 in a 2x2 grid with 2-pixel padding
    assert traj.request.n == 4 and all(v.x_t.shape == v.pred_x0.shape == (22, 22) for v in traj.steps)
    batch = studio.sample("local/tiny-ddpm", SampleRequest("ddim", 3, n=4, seed=4))
    np.testing.assert_array_equal(traj.final, make_grid(batch))
    *_, (_, _, one) = studio.trajectory("local/tiny-ddpm", request)
    np.testing.assert_array_equal(one.final, batch[0])  # the first image of the batch, alone
    *_, (_, _, text) = studio.trajectory("local/tiny-sd", SampleRequest("ddim", 2, prompt="a star", guidance_scale=3.0),
                                         images=2)
    assert text.tokens is None and text.steps[0].attention is None  # attention maps: one-image runs only
    assert text.steps[0].guidance.uncond.shape == (4, 8, 8)  # the first image's guidance pair
    with pytest.raises(ValueError, match="1 to 16 images"):
        next(studio.trajectory("local/tiny-ddpm", request, images=17))


def test_schedule_curves_match_the_scheduler(studio) -> None:
    curves = studio.schedule("local/tiny-ddpm")
    assert len(curves.timesteps) == 100
    assert np.all(np.diff(curves.alphas_cumprod) < 0)
    np.testing.assert_allclose(curves.alphas_cumprod, np.cumprod(1 - curves.betas), rtol=1e-5)
    assert np.all(np.diff(curves.log_snr) < 0)


def test_nan_mid_sampling_is_an_error_not_an_image(studio, monkeypatch: pytest.MonkeyPatch) -> None:
    model = studio.load("local/tiny-ddpm")
    real_forward = model.unet.forward

    def poisoned(sample, timestep, *args, **kwargs):
        out = real_forward(sample, timestep, *args, **kwargs)
        out.sample[:] = float("nan")
        return out

    monkeypatch.setattr(model.unet, "forward", poisoned)
    with pytest.raises(FloatingPointError, match="NaN"):
        studio.sample("local/tiny-ddpm", SampleRequest("ddim", 3, n=1, seed=0))


@pytest.mark.parametrize("request_, message", [
    (SampleRequest(steps=0), "(?i)steps"),
    (SampleRequest(steps=101), "(?i)steps"),
    (SampleRequest(n=65), "(?i)batch"),
    (SampleRequest(seed=-1), "(?i)seed"),
    (SampleRequest(seed=2**32), "(?i)seed"),
    (SampleRequest(eta=float("nan")), "eta"),
    (SampleRequest(sampler="heun"), "sampler"),
    (SampleRequest(prompt="a cat"), "unconditional"),
])
def test_invalid_requests_are_refused_before_any_model_call(studio, request_, message) -> None:
    with pytest.raises(ValueError, match=message):
        list(studio.generate("local/tiny-ddpm", request_))


def test_unknown_model_is_refused(studio) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        list(studio.generate("nope", SampleRequest()))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_every_timestep_of_an_sd_style_schedule_runs(studio, sampler) -> None:
    """Stable Diffusion's scheduler config ("leading" spacing, steps_offset 1, as tiny-sd's) shifts each
    timestep up by one: T steps asked for timestep T and crashed inside diffusers (IndexError). The most
    steps allowed is now T - 1, and T gets the readable message (found by the Ray backend's test)."""
    *_, final = studio.generate("local/tiny-sd", SampleRequest(sampler, 99, 1, 0, prompt="a star"), previews=0)
    assert final.images.shape[0] == 1
    with pytest.raises(ValueError, match="Steps must be a whole number between 1 and 99"):
        list(studio.generate("local/tiny-sd", SampleRequest(sampler, 100, 1, 0, prompt="a star")))
    *_, lanes = studio.race("local/tiny-sd", SampleRequest(seed=1, prompt="a star"), (("ddpm", 1000),))
    assert lanes[0].steps == 99 and lanes[0].done  # the race's "all timesteps" lane
