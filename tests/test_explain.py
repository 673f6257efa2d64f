"""The step lab's coefficients are the scheduler's own: rebuilding each step from them
reproduces the real run of the one sampling loop."""

from __future__ import annotations

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from diffusion.explain import step_terms, update_latex
from diffusion.loop import denoise, predicted_noise
from diffusion.schedulers import make_scheduler
from tests.tiny import tiny_unet

CONFIG = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False,
          "prediction_type": "epsilon", "_class_name": "DDPMScheduler"}


def run(sampler: str, steps: int, eta: float = 0.0, config=CONFIG):
    torch.manual_seed(0)
    unet = tiny_unet(1).eval()
    generator = torch.Generator("cpu").manual_seed(3)
    noise = randn_tensor((2, 1, 8, 8), generator=generator)
    scheduler = make_scheduler(sampler, config)
    return list(denoise(lambda x, t: unet(x, t).sample, scheduler, noise, steps, generator=generator,
                        eta=eta if sampler == "ddim" else None))


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("dpmpp-2m", 10), ("dpmpp-2m", 20), ("euler", 8)])
def test_deterministic_updates_rebuild_the_run(sampler, steps):
    records = run(sampler, steps)
    terms = step_terms(sampler, CONFIG, steps)
    assert len(terms) == len(records)
    for i, (rec, term) in enumerate(zip(records, terms, strict=True)):
        assert term.timestep == rec.timestep
        rebuilt = term.coef_sample * rec.sample + term.coef_eps * rec.model_output
        if term.coef_history:
            rebuilt = rebuilt + term.coef_history * records[i - 1].pred_original_sample
        torch.testing.assert_close(rebuilt, rec.prev_sample, atol=2e-4, rtol=1e-3)
    if sampler == "dpmpp-2m":  # second order from the second step on (first order at the ends)
        assert terms[0].coef_history == 0 and terms[1].coef_history != 0


V_CONFIG = {**CONFIG, "beta_schedule": "linear", "prediction_type": "v_prediction", "timestep_spacing": "trailing"}


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("dpmpp-2m", 10), ("euler", 8)])
def test_v_prediction_updates_rebuild_the_run_in_terms_of_the_implied_noise(sampler, steps):
    """For a v-predicting model the printed coefficients multiply eps = sqrt(1-ab) x_t + sqrt(ab) v."""
    records = run(sampler, steps, config=V_CONFIG)
    terms = step_terms(sampler, V_CONFIG, steps)
    scheduler = make_scheduler(sampler, V_CONFIG)
    for i, (rec, term) in enumerate(zip(records, terms, strict=True)):
        eps = predicted_noise(scheduler, rec.model_input, rec.model_output, int(round(rec.timestep)))
        rebuilt = term.coef_sample * rec.sample + term.coef_eps * eps
        if term.coef_history:
            rebuilt = rebuilt + term.coef_history * records[i - 1].pred_original_sample
        tol = 2e-4
        torch.testing.assert_close(rebuilt, rec.prev_sample, atol=tol, rtol=1e-3)


def test_ddim_x0_form_matches_eq_12_with_clipped_x0():
    config = {**CONFIG, "clip_sample": True}
    records = run("ddim", 10, config=config)
    for rec, term in zip(records, step_terms("ddim", config, 10), strict=True):
        c0, k = term.ddim_coefs
        torch.testing.assert_close(c0 * rec.pred_original_sample + k * rec.model_output, rec.prev_sample,
                                   atol=2e-4, rtol=1e-3)
        assert c0 == pytest.approx(term.alpha_prod_prev ** 0.5, rel=1e-4)  # Eq. 12, eta = 0
        assert k == pytest.approx((1 - term.alpha_prod_prev) ** 0.5, rel=1e-3, abs=1e-5)
        assert term.noise_std == 0


def test_ddpm_noise_and_posterior_coefficients():
    """DDPM Eq. 7: c0 = sqrt(ab_prev) beta_t / (1 - ab), ct = sqrt(alpha_t)(1 - ab_prev)/(1 - ab),
    sigma_t^2 = beta~_t; with all 100 steps the effective beta_t is the schedule's own."""
    terms = step_terms("ddpm", CONFIG, 100)
    for term in terms[:-1]:
        ab, ab_prev = term.alpha_prod_t, term.alpha_prod_prev
        beta = 1 - ab / ab_prev
        assert beta == pytest.approx(term.beta_t, rel=1e-4)
        assert term.coef_x0 == pytest.approx(ab_prev ** 0.5 * beta / (1 - ab), rel=1e-3)
        assert term.coef_xt == pytest.approx((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab), rel=1e-3)
        assert term.noise_std == pytest.approx(((1 - ab_prev) / (1 - ab) * beta) ** 0.5, rel=1e-3)
    assert terms[-1].noise_std == 0  # no noise is added on the last step


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "euler", "euler-a"])
def test_every_sampler_typesets(sampler):
    text = update_latex(step_terms(sampler, CONFIG, 5)[2])
    assert "$$" in text and "\\epsilon_\\theta" in text and "Step 3 of 5" in text
