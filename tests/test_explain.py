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


# ----- the step note, recomputed from the numbers as displayed -----
import math  # noqa: E402
import re  # noqa: E402

LINEAR_1000 = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
               "clip_sample": False, "prediction_type": "epsilon", "_class_name": "DDPMScheduler"}


def shown(text: str, pattern: str) -> float:
    """The number the note displays after ``pattern`` (a regex of the text before '= number')."""
    match = re.search(pattern + r"[^$]*?= (-?[0-9.e+-]+)", text)
    assert match is not None, (pattern, text)
    return float(match.group(1))


def shown_update(text: str) -> tuple[float, float, float]:
    """(a, b, s) of the note's last line: x_t' = a x_t + b eps + s z."""
    line = text.rsplit("$$x_{t'} = ", 1)[1]
    a = float(re.match(r"(-?[0-9.]+)\\,x_t", line).group(1))
    b = float(re.search(r"([+-][0-9.]+)\\,\\epsilon_\\theta", line).group(1))
    noise = re.search(r"\+ ([0-9.]+)\\,z", line)
    return a, b, float(noise.group(1)) if noise else 0.0


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", 20, 0.0), ("ddpm", 1000, 0.0), ("ddim", 20, 0.0),
                                               ("ddim", 20, 1.0), ("ddim", 1000, 0.0), ("euler", 20, 0.0),
                                               ("euler-a", 20, 0.0), ("dpmpp-2m", 20, 0.0)])
def test_a_student_recomputes_every_step_from_the_numbers_shown(sampler, steps, eta):
    """A bug fixed: for a strided sampler the note showed the 1,000-step beta_t while the update used the jump's beta.
    Now the numbers displayed give the displayed coefficients (to their 4 decimals) by the displayed formula."""
    terms = step_terms(sampler, LINEAR_1000, steps, eta)
    picks = sorted({1, 2, len(terms) // 2, len(terms) - 2, len(terms) - 1})
    for i in picks:
        text = update_latex(terms[i], terms[i - 1])
        ab, ab_prev = shown(text, r"\\bar\\alpha_t"), shown(text, r"\\bar\\alpha_\{t'\}")
        a, b, s = shown_update(text)
        tol = 2e-4 * max(1.0, abs(a), abs(b))
        sigma = None
        if sampler in ("ddpm", "ddim"):
            sigma = shown(text, r"noise \$\\sigma_t")  # the noise's scale, to 6 digits (z's coefficient: 4 decimals)
            assert s == pytest.approx(sigma, abs=1e-4)
        if sampler == "ddpm":
            beta = shown(text, r"\$\\beta = 1 - ")
            assert beta == pytest.approx(1 - ab / ab_prev, rel=1e-4, abs=2e-6)  # the jump's beta, not the schedule's
            c0 = math.sqrt(ab_prev) * beta / (1 - ab)
            ct = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
            assert re.search(rf"= {c0:.4f}\\,\\hat x_0 \+ {ct:.4f}\\,x_t", text) or \
                (abs(c0 - terms[i].coef_x0) < 1.5e-4 and abs(ct - terms[i].coef_xt) < 1.5e-4), (i, text)
            # in terms of the noise: x_t' = (c0 / sqrt(ab) + ct) x_t - c0 sqrt(1 - ab) / sqrt(ab) eps
            assert a == pytest.approx(c0 / math.sqrt(ab) + ct, abs=tol)
            assert b == pytest.approx(-c0 * math.sqrt(1 - ab) / math.sqrt(ab), abs=tol)
            if i == len(terms) - 1:
                assert s == 0
            else:  # Eq. 7's variance for the jump: (1 - ab') / (1 - ab) beta
                assert s == pytest.approx(math.sqrt((1 - ab_prev) / (1 - ab) * beta), abs=2e-4)
        elif sampler == "ddim":
            k = math.sqrt(max(0.0, 1 - ab_prev - sigma * sigma))
            assert a == pytest.approx(math.sqrt(ab_prev / ab), abs=tol)
            assert b == pytest.approx(k - math.sqrt(ab_prev) * math.sqrt(1 - ab) / math.sqrt(ab), abs=tol)
        elif sampler == "euler":
            sig, sig_prev = shown(text, r"noise level \$\\sigma_t"), shown(text, r"\$\\sigma_\{t'\}")
            assert a == pytest.approx(1.0, abs=1e-4)
            assert b == pytest.approx(sig_prev - sig, rel=2e-3, abs=2e-4)
        elif sampler == "euler-a":
            sig, sig_prev = shown(text, r"noise level \$\\sigma_t"), shown(text, r"\$\\sigma_\{t'\}")
            up = math.sqrt(sig_prev**2 * (sig**2 - sig_prev**2) / sig**2)
            down = math.sqrt(sig_prev**2 - up**2)
            assert b == pytest.approx(down - sig, rel=2e-3, abs=2e-4) and s == pytest.approx(up, rel=2e-3, abs=2e-4)
        elif sampler == "dpmpp-2m":
            al, sg = shown(text, r"\$\\alpha_t = "), shown(text, r"\$\\sigma_t = ")
            al_p, sg_p = shown(text, r"\$\\alpha_\{t'\}"), shown(text, r"\$\\sigma_\{t'\}")
            e = (sg_p / al_p) / (sg / al) if al_p < 1 else 0.0  # e^{-h}
            scale = 1.0
            if "r = h" in text:
                r = shown(text, r"\$r = h")
                scale = 1 + 1 / (2 * r)
                history = float(re.search(r"([+-][0-9.]+)\\,\\hat x_0\^\{\(i-1\)\}", text).group(1))
                assert history == pytest.approx(al_p * (e - 1) / (2 * r), abs=tol)
            # x_t' = (sg'/sg) x_t - al' (e - 1) scale x0_hat, with x0_hat = (x_t - sg eps) / al
            assert a == pytest.approx(sg_p / sg - al_p * (e - 1) * scale / al, abs=tol)
            assert b == pytest.approx(al_p * (e - 1) * scale * sg / al, abs=tol)
        if terms[i].strided:
            assert "jumps" in text or sampler not in ("ddpm",)


def test_one_symbol_per_meaning():
    """sigma_t named both sqrt((1-ab)/ab) and the noise's scale in one block before; now each block has one."""
    for sampler in ("ddpm", "ddim"):
        text = update_latex(step_terms(sampler, LINEAR_1000, 20)[3])
        assert "\\sqrt{(1-\\bar\\alpha_t)/\\bar\\alpha_t}" not in text and "noise $\\sigma_t" in text
    text = update_latex(step_terms("euler", LINEAR_1000, 20)[3])
    assert "noise level $\\sigma_t" in text and "noise $\\sigma_t" not in text


@pytest.mark.parametrize("sampler, steps, eta", [("ddpm", 10, 0.0), ("ddpm", 100, 0.0), ("ddim", 10, 0.0),
                                                 ("ddim", 10, 1.0)])
def test_the_update_drawn_as_pictures_adds_up_to_the_next_sample(sampler, steps, eta):
    """x_{t-1} = c0 x0_hat + ct x_t + sigma z with the step's coefficients as shown: the two model terms come from
    the numbers in the step note, and what is left is the noise term, sigma z: z of unit spread for DDPM and
    DDIM with eta = 1, nothing for DDIM with eta = 0."""
    from diffusion.lab.trajectory import update_pictures, update_terms

    records = run(sampler, steps, eta)
    terms = step_terms(sampler, CONFIG, steps, eta)
    for record, term in zip(records, terms, strict=True):
        x0_term, xt_term, noise_term = update_terms(record, term)
        torch.testing.assert_close(x0_term, term.coef_x0 * record.pred_original_sample[0].double())
        torch.testing.assert_close(xt_term, term.coef_xt * record.sample[0].double())
        torch.testing.assert_close((x0_term + xt_term + noise_term).float(), record.prev_sample[0], rtol=0, atol=1e-6)
        if term.noise_std == 0:
            assert float(noise_term.abs().max()) < 1e-3  # deterministic: the two terms are the whole update (float32)
        elif record.index < len(records) - 1:
            z = noise_term / term.noise_std  # the step's own draw of N(0, I), 64 values
            assert 0.6 < float(z.std()) < 1.4 and abs(float(z.mean())) < 0.5
        pictures = update_pictures(record, term)
        assert pictures.x0_term.shape == pictures.result.shape == (8, 8) and pictures.scale > 0
        assert (pictures.coef_x0, pictures.coef_xt, pictures.noise_std) == (term.coef_x0, term.coef_xt, term.noise_std)
    assert update_pictures(records[0], step_terms("euler", CONFIG, steps)[0]) is None  # not in the x0 form
