"""UNet precision: fp32 (bit-exact with diffusers) or bf16 autocast (the CPU default where native)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion.loading import (
    Speedups,
    choose_autocast,
    cpu_has_native_bf16,
    precision_name,
)
from diffusion.pipeline import pixel_steps
from diffusion.recipe import Recipe, make_recipe
from diffusion.registry import Registry
from diffusion.request import SampleRequest
from diffusion.studio import Studio
from tests.tiny import tiny_unet


def test_precision_choice() -> None:
    cpu = torch.device("cpu")
    assert choose_autocast("fp32", cpu) is None
    assert choose_autocast("bf16", cpu) is torch.bfloat16
    assert choose_autocast("auto", cpu) is (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert choose_autocast("auto", torch.device("cuda")) is None  # CUDA weights are float16 already
    assert precision_name(torch.bfloat16) == "bf16" and precision_name(None) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        choose_autocast("fp8", cpu)


def test_bf16_autocast_runs_the_unet_in_bf16_and_keeps_the_loop_in_fp32() -> None:
    unet = tiny_unet().eval()
    config = {"num_train_timesteps": 100, "beta_schedule": "linear"}
    request = SampleRequest("ddim", 3, n=2, seed=0)
    fp32 = list(pixel_steps(unet, config, request))
    bf16 = list(pixel_steps(unet, config, request, autocast_dtype=torch.bfloat16))
    again = list(pixel_steps(unet, config, request, autocast_dtype=torch.bfloat16))
    for a, b, c in zip(fp32, bf16, again, strict=True):
        assert b.model_output.dtype == b.prev_sample.dtype == torch.float32
        assert torch.equal(b.prev_sample, c.prev_sample)  # deterministic
        assert not torch.equal(a.model_output, b.model_output)  # bf16 arithmetic really ran
        torch.testing.assert_close(b.model_output, a.model_output, rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_bf16_studio_and_its_recipe_replay_bit_identically(tiny_sd_dir, tmp_path) -> None:
    studio = Studio(Registry.default([tiny_sd_dir]), device="cpu", precision="bf16")
    model = studio.load("local/tiny-sd")
    assert model.autocast_dtype is torch.bfloat16
    request = SampleRequest("ddim", 3, n=2, seed=3, prompt="a red circle", guidance_scale=3.0)
    images = studio.sample("local/tiny-sd", request)
    recipe = make_recipe("local/tiny-sd", request, model.scheduler_config, precision_name(model.autocast_dtype))
    assert json.loads(recipe.to_json())["precision"] == "bf16" and Recipe.from_json(recipe.to_json()) == recipe
    path = tmp_path / "recipe.json"
    path.write_text(recipe.to_json())
    out = subprocess.run([sys.executable, "-m", "diffusion.sample", "--model-dir", str(tiny_sd_dir), "--recipe",
                          str(path), "--out", str(tmp_path / "g.png"), "--save-npy", str(tmp_path / "s.npy")],
                         capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), images)
    fp32 = Studio(Registry.default([tiny_sd_dir]), device="cpu", precision="fp32").sample("local/tiny-sd", request)
    assert np.abs(fp32.astype(int) - images.astype(int)).mean() < 8  # close to fp32 (uint8 levels)
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        Recipe.from_json(recipe.to_json().replace('"bf16"', '"fp8"'))


@pytest.mark.slow
@pytest.mark.parametrize("speedups", [Speedups(channels_last=True), Speedups(compile=True)], ids=["channels_last", "compile"])
def test_optional_speedups_keep_the_images(tiny_ddpm_dir, tiny_sd_dir, speedups) -> None:
    registry = Registry.default([tiny_ddpm_dir, tiny_sd_dir])
    plain = Studio(registry, device="cpu", precision="fp32")
    fast = Studio(registry, device="cpu", precision="fp32", speedups=speedups)
    for model_id, request in (("local/tiny-ddpm", SampleRequest("ddim", 2, n=2, seed=1)),
                              ("local/tiny-sd", SampleRequest("ddim", 2, n=1, seed=1, prompt="a red circle",
                                                              guidance_scale=3.0))):
        a, b = plain.sample(model_id, request), fast.sample(model_id, request)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # the same images up to float rounding
    if speedups.channels_last:
        assert fast.load("local/tiny-ddpm").unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
