"""Each sampler's update at each step, as the numbers the step-by-step lab typesets.

Every sampler the app offers takes, at step i, the current sample x_t, the model's noise
prediction eps_theta (for v- or x0-predicting models, the noise their output implies; see
``diffusion.loop.predicted_noise``) and, for DPM-Solver++ 2M, the previous step's x0 estimate, to

    x_prev = a * x_t + b * eps_theta + c * x0_hat_prev + s * z,      z ~ N(0, I)

(linear in its inputs as long as x0 is not clipped). The coefficients are read off the
diffusers scheduler itself, not re-derived: a fresh scheduler is replayed through the run's
timesteps and, at each step, copies of it are probed with tiny basis inputs. So what the lab
prints is what the scheduler computes. For DDPM and DDIM the same update is also given in the
x0 form of the papers, x_prev = c0 * x0_hat + ct * x_t + s * z (Ho et al. 2020, Eq. 7; Song et al. 2021, Eq. 12), which
stays exact when x0_hat is clipped.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from diffusion.schedulers import get_sampler, make_scheduler

# Probes are float64 and small enough that clipping / thresholding of x0 never triggers;
# Euler-type schedulers neither clip nor keep float64 (they upcast to float32), so they get 1.0.
_PROBE = 1e-6
_SHAPE = (1, 1, 4, 4)


@dataclass(frozen=True)
class StepTerms:
    """One step's update: x_prev = a x_t + b eps + c x0_prev + s z, and the schedule's numbers.

    ``alpha_prod_t`` is alpha-bar at the step's timestep; ``alpha_prod_prev`` at the timestep it
    lands on (1.0 after the last step). ``sigma_t`` = sqrt((1 - alpha-bar) / alpha-bar), the
    noise level of Karras et al. 2022 used by Euler and DPM-Solver. ``coef_x0``, ``coef_xt`` give
    the same update as c0 * x0_hat + ct * x_t (+ s z): DDPM's posterior-mean form; ``ddim_coefs``
    the DDIM form c0 * x0_hat + k * eps (+ s z). Each stays exact when x0_hat is clipped, as the
    scheduler computes it in that form.
    """

    sampler: str
    index: int
    num_steps: int
    timestep: float
    prev_timestep: float | None
    alpha_prod_t: float
    alpha_prod_prev: float
    beta_t: float
    sigma_t: float
    coef_sample: float
    coef_eps: float
    coef_history: float
    noise_std: float

    @property
    def alpha_jump(self) -> float:
        """alpha of this step's jump t -> t': alpha-bar_t / alpha-bar_t' (the schedule's alpha_t when t' = t - 1)."""
        return self.alpha_prod_t / self.alpha_prod_prev

    @property
    def beta_jump(self) -> float:
        """beta of this step's jump, 1 - alpha-bar_t / alpha-bar_t': what DDPM's update uses when it strides over
        several of the schedule's steps (diffusers' ``current_beta_t``); equal to ``beta_t`` for a one-step jump."""
        return 1 - self.alpha_jump

    @property
    def strided(self) -> bool:
        """Whether this step jumps over more than one of the schedule's steps."""
        return self.prev_timestep is not None and round(self.timestep - self.prev_timestep) != 1

    @property
    def karras_sigma_prev(self) -> float:
        """The noise level sqrt((1 - alpha-bar) / alpha-bar) at the step this one lands on (0 after the last)."""
        return math.sqrt((1 - self.alpha_prod_prev) / self.alpha_prod_prev)

    @property
    def coef_x0(self) -> float:
        return -self.coef_eps * math.sqrt(self.alpha_prod_t) / math.sqrt(1 - self.alpha_prod_t)

    @property
    def coef_xt(self) -> float:
        return self.coef_sample + self.coef_eps / math.sqrt(1 - self.alpha_prod_t)

    @property
    def ddim_coefs(self) -> tuple[float, float]:
        """(c0, k) of the DDIM form x_prev = c0 x0_hat + k eps (+ s z): c0 = sqrt(alpha-bar_prev),
        k = sqrt(1 - alpha-bar_prev - sigma^2) (Song et al. 2021, Eq. 12)."""
        return (self.coef_sample * math.sqrt(self.alpha_prod_t),
                self.coef_eps + self.coef_sample * math.sqrt(1 - self.alpha_prod_t))


def _model_output(probe, eps: torch.Tensor, sample: torch.Tensor, t) -> torch.Tensor:
    """The model output that means noise ``eps`` at ``sample``, for the model's ``prediction_type``:
    the probes are always in terms of eps, whatever the network predicts."""
    kind = probe.config.prediction_type
    if kind == "epsilon":
        return eps
    # the variance-preserving x_t and alpha-bar_t at this step: Euler scales its sample by
    # 1 / sqrt(sigma^2 + 1) = sqrt(alpha-bar_t); the others have x_t = sample
    scale = float(copy.deepcopy(probe).scale_model_input(torch.ones(1, dtype=torch.float64), t)[0])
    x_t = sample * scale
    alpha_prod_t = scale**2 if scale != 1.0 else float(probe.alphas_cumprod[int(round(float(t)))])
    if kind == "v_prediction":  # v = (eps - sqrt(1 - alpha-bar) x_t) / sqrt(alpha-bar) (Salimans & Ho 2022)
        return (eps - math.sqrt(1 - alpha_prod_t) * x_t) / math.sqrt(alpha_prod_t)
    if kind == "sample":  # x0 = (x_t - sqrt(1 - alpha-bar) eps) / sqrt(alpha-bar) (Ho et al. 2020, Eq. 15)
        return (x_t - math.sqrt(1 - alpha_prod_t) * eps) / math.sqrt(alpha_prod_t)
    raise ValueError(f"unsupported prediction_type {kind!r}")


def _step(scheduler, eps: torch.Tensor, t, sample: torch.Tensor, kwargs: dict[str, Any],
          seed: int = 0) -> torch.Tensor:
    probe = copy.deepcopy(scheduler)
    model_output = _model_output(probe, eps, sample, t)
    probe.scale_model_input(sample, t)  # Euler checks that the input was scaled
    generator = torch.Generator("cpu").manual_seed(seed)
    return probe.step(model_output, t, sample, generator=generator, **kwargs).prev_sample


def step_terms(sampler: str, scheduler_config: dict[str, Any], num_steps: int, eta: float = 0.0,
               scheduler: SchedulerMixin | None = None) -> list[StepTerms]:
    """The update of every step of a ``num_steps`` run of ``sampler`` (cheap: 1x1x4x4 probes).

    ``scheduler``: the run's own fresh scheduler, if built already; it is not changed (a copy is
    replayed through the timesteps).
    """
    spec = get_sampler(sampler)
    scheduler = copy.deepcopy(scheduler) if scheduler is not None else make_scheduler(sampler, scheduler_config)
    scheduler.set_timesteps(num_steps)
    kwargs: dict[str, Any] = {"eta": eta} if spec.uses_eta else {}
    alphas_cumprod = scheduler.alphas_cumprod.double()
    betas = scheduler.betas.double()
    timesteps = [float(t) for t in scheduler.timesteps]
    delta = 1.0 if sampler.startswith("euler") else _PROBE
    zero = torch.zeros(_SHAPE, dtype=torch.float64)
    one = torch.full(_SHAPE, delta, dtype=torch.float64)
    z = randn_tensor(_SHAPE, generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float64)
    out: list[StepTerms] = []
    # where the last step lands: DDIM's final alpha-bar is 1 or the schedule's first (set_alpha_to_one)
    final_alpha = float(getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0)))
    for index, t in enumerate(scheduler.timesteps):
        # probe copies of the scheduler in its current state
        base = _step(scheduler, zero, t, zero, kwargs)
        a = float((_step(scheduler, zero, t, one, kwargs) - base).mean()) / delta
        b = float((_step(scheduler, one, t, zero, kwargs) - base).mean()) / delta
        c = 0.0
        history = getattr(scheduler, "model_outputs", None)
        if history is not None and history[-1] is not None:
            probe = copy.deepcopy(scheduler)
            probe.model_outputs[-1] = one.clone()
            probe.scale_model_input(zero, t)
            c = float((probe.step(zero, t, zero, **kwargs).prev_sample - base).mean()) / delta
        s = float((base.double() * z).sum() / (z * z).sum()) if spec.stochastic or kwargs.get("eta", 0) > 0 else 0.0
        ti = int(round(timesteps[index]))
        prev_t = timesteps[index + 1] if index + 1 < len(timesteps) else None
        ab = float(alphas_cumprod[ti])
        ab_prev = float(alphas_cumprod[int(round(prev_t))]) if prev_t is not None else final_alpha
        sigmas = getattr(scheduler, "sigmas", None)
        if sampler.startswith("euler") and sigmas is not None:
            # Euler's sigmas are interpolated at fractional timesteps: the numbers it really uses
            ab, ab_prev = 1 / (1 + float(sigmas[index]) ** 2), 1 / (1 + float(sigmas[index + 1]) ** 2)
        out.append(StepTerms(
            sampler=sampler, index=index, num_steps=len(timesteps), timestep=timesteps[index], prev_timestep=prev_t,
            alpha_prod_t=ab, alpha_prod_prev=ab_prev, beta_t=float(betas[ti]),
            sigma_t=math.sqrt((1 - ab) / ab),
            coef_sample=a, coef_eps=b, coef_history=c, noise_std=abs(s)))
        # advance the real scheduler (zero inputs keep its history at zero)
        scheduler.scale_model_input(zero, t)
        scheduler.step(zero, t, zero, generator=torch.Generator("cpu").manual_seed(0), **kwargs)
    return out


def _g(value: float) -> str:
    """A number as the note shows it: 6 significant digits (alpha-bar near T is tiny)."""
    return f"{value:.6g}"


def _ab(value: float) -> str:
    """alpha-bar as the note shows it: 6 significant digits, and near 1 enough decimals that 1 - alpha-bar keeps
    5 significant digits (the DDPM coefficients divide by it)."""
    if value >= 1:
        return "1"
    if value > 0.5:
        return f"{value:.{math.ceil(-math.log10(1 - value)) + 4}f}"
    return _g(value)


def update_latex(terms: StepTerms, previous: StepTerms | None = None) -> str:
    """The step's update in the paper's notation, then with this step's numbers (Markdown + LaTeX).

    Every number the update uses is shown, one symbol per meaning: for a strided run the jump's own
    beta = 1 - alpha-bar_t / alpha-bar_t' (not the 1,000-step schedule's beta_t); sigma_t is the noise's standard
    deviation in DDPM and DDIM, the noise level sqrt((1 - alpha-bar)/alpha-bar) for Euler, and sqrt(1 - alpha-bar)
    for DPM-Solver++. ``previous``: the step before (DPM-Solver++ shows its step-size ratio r).
    """
    s, i = terms, terms.index
    prev = "t'"
    head = (f"**Step {i + 1} of {s.num_steps}**, $t = {s.timestep:.0f}$"
            + (f" → $t' = {s.prev_timestep:.0f}$" if s.prev_timestep is not None else " → the clean image")
            + f": $\\bar\\alpha_t = {_ab(s.alpha_prod_t)}$, $\\bar\\alpha_{{{prev}}} = {_ab(s.alpha_prod_prev)}$")
    x0 = (f"$$\\hat x_0 = \\frac{{x_t - \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon_\\theta}}{{\\sqrt{{\\bar\\alpha_t}}}}"
          f" = \\frac{{x_t - {math.sqrt(1 - s.alpha_prod_t):.4f}\\,\\epsilon_\\theta}}"
          f"{{{math.sqrt(s.alpha_prod_t):.4f}}}$$\n\n")
    noise = f" + {s.noise_std:.4f}\\,z" if s.noise_std > 0 else ""
    numeric = (f"$$x_{{{prev}}} = {s.coef_sample:.4f}\\,x_t {s.coef_eps:+.4f}\\,\\epsilon_\\theta"
               + (f" {s.coef_history:+.4f}\\,\\hat x_0^{{(i-1)}}" if s.coef_history else "") + noise + "$$")
    jump = ""
    if s.strided:
        jump = (f" (this step jumps {s.timestep - (s.prev_timestep or 0):.0f} of the schedule's steps, so its $\\beta$ "
                f"is the jump's, not the schedule's $\\beta_{{{s.timestep:.0f}}} = {_g(s.beta_t)}$)")
    if s.sampler == "ddpm":
        head += (f", $\\beta = 1 - \\bar\\alpha_t/\\bar\\alpha_{{{prev}}} = {_g(s.beta_jump)}$, "
                 f"$\\alpha = 1 - \\beta = {_g(s.alpha_jump)}$, noise $\\sigma_t = {_g(s.noise_std)}$" + jump)
        body = ("DDPM posterior mean (Ho et al. 2020, Eq. 7; Algorithm 2 line 4 when $\\hat x_0$ is not clipped):\n"
                f"$$x_{{{prev}}} = \\frac{{\\sqrt{{\\bar\\alpha_{{{prev}}}}}\\,\\beta}}{{1-\\bar\\alpha_t}}\\hat x_0 + "
                f"\\frac{{\\sqrt{{\\alpha}}(1-\\bar\\alpha_{{{prev}}})}}{{1-\\bar\\alpha_t}}x_t + \\sigma_t z"
                f" = {s.coef_x0:.4f}\\,\\hat x_0 + {s.coef_xt:.4f}\\,x_t{noise}$$\n\nIn terms of the noise: ")
    elif s.sampler == "ddim":
        head += f", noise $\\sigma_t = {_g(s.noise_std)}$" + (" ($\\eta = 0$: deterministic)" if s.noise_std == 0 else "")
        body = ("DDIM (Song et al. 2021, Eq. 12):\n"
                f"$$x_{{{prev}}} = \\sqrt{{\\bar\\alpha_{{{prev}}}}}\\,\\hat x_0 + \\sqrt{{1-\\bar\\alpha_{{{prev}}}-\\sigma_t^2}}\\,"
                "\\epsilon_\\theta + \\sigma_t z"
                f" = {s.ddim_coefs[0]:.4f}\\,\\hat x_0 + {s.ddim_coefs[1]:.4f}\\,\\epsilon_\\theta{noise}$$"
                "\n\nIn terms of $x_t$: ")
    elif s.sampler == "dpmpp-2m":
        alpha, sigma = math.sqrt(s.alpha_prod_t), math.sqrt(1 - s.alpha_prod_t)
        alpha_p, sigma_p = math.sqrt(s.alpha_prod_prev), math.sqrt(1 - s.alpha_prod_prev)
        head += (f", $\\alpha_t = \\sqrt{{\\bar\\alpha_t}} = {_g(alpha)}$, $\\sigma_t = \\sqrt{{1-\\bar\\alpha_t}} = {_g(sigma)}$, "
                 f"$\\alpha_{{{prev}}} = {_g(alpha_p)}$, $\\sigma_{{{prev}}} = {_g(sigma_p)}$")
        order = "first order"
        if s.coef_history and previous is not None and s.alpha_prod_prev < 1:
            r = dpm_ratio(previous, s)
            head += f", $r = h_{{\\text{{prev}}}}/h = {_g(r)}$"
            order = "second order (uses the previous step's $\\hat x_0$)"
        body = (f"DPM-Solver++ 2M (Lu et al. 2022, Algorithm 2), {order}: with "
                "$\\lambda = \\log(\\alpha/\\sigma)$, $h = \\lambda_{t'} - \\lambda_t$, "
                "$$x_{t'} = \\frac{\\sigma_{t'}}{\\sigma_t}x_t - \\alpha_{t'}"
                "(e^{-h}-1)\\Big[(1+\\tfrac{1}{2r})\\hat x_0^{(i)} - \\tfrac{1}{2r}\\hat x_0^{(i-1)}\\Big]$$"
                "\n\nWith this step's numbers: ")
    elif s.sampler in ("euler", "euler-a"):
        head += (f", noise level $\\sigma_t = \\sqrt{{(1-\\bar\\alpha_t)/\\bar\\alpha_t}} = {_g(s.sigma_t)}$, "
                 f"$\\sigma_{{{prev}}} = {_g(s.karras_sigma_prev)}$")
        body = ("Euler (Karras et al. 2022, Algorithm 1) in the $\\sigma$ parametrisation, where "
                "$x_t$ is the sample scaled by $\\sqrt{1+\\sigma_t^2}$ and $d = (x_t - \\hat x_0)/\\sigma_t = "
                "\\epsilon_\\theta$: "
                + ("$$x_{t'} = x_t + (\\sigma_{t'} - \\sigma_t)\\,d$$" if s.sampler == "euler" else
                   "$$x_{t'} = x_t + (\\sigma_{\\text{down}} - \\sigma_t)\\,d + \\sigma_{\\text{up}} z,\\quad "
                   "\\sigma_{\\text{up}} = \\sqrt{\\sigma_{t'}^2(\\sigma_t^2-\\sigma_{t'}^2)/\\sigma_t^2},\\ "
                   "\\sigma_{\\text{down}} = \\sqrt{\\sigma_{t'}^2-\\sigma_{\\text{up}}^2}$$")
                + "\n\nWith this step's numbers: ")
    else:
        body = "With this step's numbers: "
    return head + "\n\n" + x0 + body + numeric


def dpm_ratio(previous: StepTerms, current: StepTerms) -> float:
    """DPM-Solver++ 2M's r = h_{i-1} / h_i, with lambda = log(alpha / sigma) = log(sqrt(ab / (1 - ab)))."""
    def lam(ab: float) -> float:
        return 0.5 * math.log(ab / (1 - ab))

    return (lam(previous.alpha_prod_prev) - lam(previous.alpha_prod_t)) / (lam(current.alpha_prod_prev) - lam(current.alpha_prod_t))
