"""The one loop against diffusers' own pipelines, and its records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, StableDiffusionPipeline

from diffusion.loading import ModelStore
from diffusion.pipeline import decode_latents, latent_steps, pixel_steps
from diffusion.registry import Registry, local_card
from diffusion.request import SampleRequest
from diffusion.schedulers import SAMPLERS, make_scheduler
from tests.tiny import tiny_ddpm_pipeline


def final(records):
    *_, last = records
    return last.prev_sample


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("steps", [2, 5])
def test_ddpm_equals_diffusers_pipeline(channels: int, steps: int) -> None:
    pipe = tiny_ddpm_pipeline(channels)
    pipe.set_progress_bar_config(disable=True)
    ours = final(pixel_steps(pipe.unet, dict(pipe.scheduler.config), SampleRequest("ddpm", steps, n=3, seed=7)))
    ref = pipe(batch_size=3, num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(7),
               output_type="np").images
    np.testing.assert_allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_equals_diffusers_pipeline(eta: float) -> None:
    base = tiny_ddpm_pipeline(1)
    pipe = DDIMPipeline(unet=base.unet, scheduler=DDIMScheduler.from_config(base.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    request = SampleRequest("ddim", 4, n=2, seed=3, eta=eta)
    ours = final(pixel_steps(base.unet, dict(base.scheduler.config), request))
    ref = pipe(batch_size=2, num_inference_steps=4, eta=eta, generator=torch.Generator("cpu").manual_seed(3),
               output_type="np").images
    np.testing.assert_allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "euler"])
def test_latent_loop_equals_stable_diffusion_pipeline(tiny_sd_dir, sampler: str) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, dict(pipe.scheduler.config))
    ref = pipe("a red circle", negative_prompt="blue", num_inference_steps=3, guidance_scale=4.0,
               num_images_per_prompt=2, height=16, width=16,
               generator=torch.Generator("cpu").manual_seed(5), output_type="pt").images
    model = ModelStore(Registry({"t": local_card(tiny_sd_dir)}), "cpu").get("t")
    request = SampleRequest(sampler, 3, n=2, seed=5, prompt="a red circle", negative_prompt="blue",
                            guidance_scale=4.0)
    ours = decode_latents(model, final(latent_steps(model, request)))
    np.testing.assert_allclose((ours / 2 + 0.5).clamp(0, 1).numpy(), ref.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_is_deterministic_and_records_each_step(sampler: str) -> None:
    pipe = tiny_ddpm_pipeline(1)
    config = dict(pipe.scheduler.config)
    request = SampleRequest(sampler, 4, n=2, seed=11)
    first = list(pixel_steps(pipe.unet, config, request))
    second = list(pixel_steps(pipe.unet, config, request))
    assert [r.index for r in first] == [0, 1, 2, 3]
    assert all(r.num_steps == 4 for r in first)
    # timesteps run downwards and each step's output is the next step's input
    assert all(a.timestep > b.timestep for a, b in zip(first, first[1:]))
    for a, b in zip(first, first[1:]):
        assert torch.equal(a.prev_sample, b.sample)
    for r in first:
        assert r.sample.shape == r.model_output.shape == r.pred_original_sample.shape == (2, 1, 8, 8)
        assert torch.isfinite(r.pred_original_sample).all()
    assert torch.equal(first[-1].prev_sample, second[-1].prev_sample)
    other = list(pixel_steps(pipe.unet, config, SampleRequest(sampler, 4, n=2, seed=12)))
    assert not torch.equal(first[-1].prev_sample, other[-1].prev_sample)


def test_pred_x0_for_dpm_solver_matches_ddpm_formula() -> None:
    """DPM-Solver++ returns no x0; ours follows Ho et al. Eq. 15 and matches DDIM's own."""
    pipe = tiny_ddpm_pipeline(1)
    config = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
    config |= {"clip_sample": False, "timestep_spacing": "trailing"}
    ddim = list(pixel_steps(pipe.unet, config, SampleRequest("ddim", 3, n=1, seed=1)))
    dpm = list(pixel_steps(pipe.unet, config, SampleRequest("dpmpp-2m", 3, n=1, seed=1)))
    assert len({r.timestep for r in ddim}) == 3
    # same noise, same first timestep, same network call: the same x0 estimate
    assert ddim[0].timestep == dpm[0].timestep
    torch.testing.assert_close(ddim[0].pred_original_sample, dpm[0].pred_original_sample, atol=1e-5, rtol=1e-5)


def test_guidance_parts_are_recorded(tiny_sd_dir) -> None:
    model = ModelStore(Registry({"t": local_card(tiny_sd_dir)}), "cpu").get("t")
    records = list(latent_steps(model, SampleRequest("ddim", 2, n=1, seed=0, prompt="a star", guidance_scale=3.0)))
    r = records[0]
    assert r.guidance_scale == 3.0
    torch.testing.assert_close(r.model_output, r.noise_pred_uncond + 3.0 * (r.noise_pred_text - r.noise_pred_uncond))
    unguided = list(latent_steps(model, SampleRequest("ddim", 2, n=1, seed=0, prompt="a star", guidance_scale=1.0)))
    assert unguided[0].noise_pred_uncond is None and unguided[0].guidance_scale is None
