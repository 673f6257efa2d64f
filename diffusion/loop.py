"""The denoising loop, written once.

Like diffusers' ``pipeline_ddpm.py`` the loop is short and explicit, but it is a generator:
it yields a :class:`StepRecord` for every step, which sampling, the streaming previews and
the step-by-step tab all consume. The loop owns no random state of its own: every draw goes
through the caller's ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.attention import AttentionMaps
from diffusion.excite import ExciteStep
from diffusion.layout import LayoutStep

# A denoiser maps (x_t, t) to the model output (noise prediction for epsilon models).
# For text models it is a closure over the prompt embeddings (see ``diffusion.pipeline``).
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

R = TypeVar("R")


class StepGate(Protocol):
    """What a model-layer service needs to run its steps under the app's sharing, without knowing how requests
    are served: ``steps`` advances ``records`` one at a time, each under the compute gate, and reads (steps done,
    steps in all) off each record with ``progress`` (the app's :class:`diffusion.gate.ComputeGate`)."""

    def steps(self, records: Iterator[R], progress: Callable[[R], tuple[int, int]] | None = None) -> Iterator[R]: ...


def record_progress(record: StepRecord) -> tuple[int, int]:
    """(steps done, steps in all) after ``record``'s step: what a runner reads to estimate the work left."""
    return record.index + 1, record.num_steps


@dataclass
class StepRecord:
    """What one reverse step saw and produced; float tensors shaped like the state: (B, C, H, W) images and
    latents, (n, 2) playground points, (B, 2, H) planner trajectories.

    ``sample`` is x_t, the input of the step (pixel models: [-1, 1] data scale plus noise;
    latent models: scaled latents); ``model_input`` is x_t as the network sees it, which
    differs only for sigma-space samplers (Euler: x_t / sqrt(sigma^2 + 1), the
    variance-preserving x_t of DDPM). ``model_output`` is the guided prediction that the
    scheduler consumed (epsilon, v or x0 as the model's ``prediction_type`` says);
    ``pred_original_sample`` is the model's estimate of x_0 at this step and
    ``prev_sample`` is x_{t-1} (the next step's ``sample``). For classifier-free guidance
    the unconditional and conditional predictions are kept as well, and ``cross_attention``
    holds the step's cross-attention maps per prompt token when the caller records them
    (:mod:`diffusion.attention`; conditional branch only).
    """

    index: int
    num_steps: int
    timestep: float
    sample: torch.Tensor
    model_input: torch.Tensor
    model_output: torch.Tensor
    pred_original_sample: torch.Tensor
    prev_sample: torch.Tensor
    noise_pred_uncond: torch.Tensor | None = None
    noise_pred_text: torch.Tensor | None = None
    guidance_scale: float | None = None
    cross_attention: AttentionMaps | None = None  # text models, when recorded: the prompt's attention
    excite: ExciteStep | None = None  # text models with Attend-and-Excite: what the step's update did
    layout: LayoutStep | None = None  # text models drawing by layout: the regions' weights and predictions

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


def predict_original_sample(
    scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, timestep: int
) -> torch.Tensor:
    """x_0 estimate for schedulers whose ``step`` does not return one (DPM-Solver++).

    Ho et al. 2020, Eq. 15: x_0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t);
    for v-prediction (Salimans & Ho 2022): x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v.
    """
    alpha_prod_t = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
    beta_prod_t = 1 - alpha_prod_t
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return (sample - beta_prod_t.sqrt() * model_output) / alpha_prod_t.sqrt()
    if prediction_type == "v_prediction":
        return alpha_prod_t.sqrt() * sample - beta_prod_t.sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def predicted_noise(
    scheduler: SchedulerMixin, model_input: torch.Tensor, model_output: torch.Tensor, timestep: int
) -> torch.Tensor:
    """The noise estimate eps_theta behind any model output, for showing and for the equations.

    ``model_input`` is the variance-preserving x_t the network saw. For v-prediction
    (Salimans & Ho 2022, Sec. 4): eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v; for
    x0-prediction: eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t) (DDPM Eq. 4).
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return model_output
    alpha_prod_t = scheduler.alphas_cumprod[int(timestep)].to(model_input.device, torch.float32)
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "v_prediction":
        return beta_prod_t.sqrt() * model_input + alpha_prod_t.sqrt() * model_output
    if prediction_type == "sample":
        return (model_input - alpha_prod_t.sqrt() * model_output) / beta_prod_t.sqrt()
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def denoise(
    denoiser: Denoiser,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    guidance: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    | None = None,
    guidance_scale: float | None = None,
    init_sample: torch.Tensor | None = None,
    start_index: int = 0,
    constrain: Callable[[torch.Tensor], torch.Tensor] | None = None,
    refine: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    start_sample: torch.Tensor | None = None,
) -> Iterator[StepRecord]:
    """Run the reverse process from ``noise`` (B, C, H, W, unit Gaussian), yielding each step.

    ``denoiser(x, t)`` predicts the model output for an unconditional model. For text
    models ``guidance(x, t)`` returns ``(guided, uncond, text)`` predictions instead
    (classifier-free guidance, Ho & Salimans 2022), and ``denoiser`` is ignored.

    With ``init_sample`` (a clean x_0 in model space) the run starts at step ``start_index``
    of the schedule from x_t ~ q(x_t | x_0) = add_noise(x_0, noise, t) instead of pure noise:
    SDEdit (Meng et al. 2022), the "denoise from here" of the forward-process lab.

    ``constrain(x)`` (optional) overwrites the known part of the state: it is applied to x_T and to every
    step's x_{t-1}, so each record's ``sample`` and ``prev_sample`` already obey it. This is conditioning by
    inpainting, as the trajectory planner fixes a plan's start and goal (Janner et al. 2022, Sec. 3.3).

    ``refine(x_t, t, index)`` (optional) edits x_t before the step's prediction, with gradients of its own:
    Attend-and-Excite's latent update (:mod:`diffusion.excite`). The record's ``sample`` is the edited x_t.

    ``start_sample`` (optional) is an x_t of the reverse process itself, taken as it is at step ``start_index``
    (no noising): the run continues from there with the caller's generator, as Ho et al.'s Fig. 7 samples
    p(x_0 | x_t) several times from one shared x_t.
    """
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    timesteps = scheduler.timesteps
    if init_sample is None and start_sample is None:
        # Sigma-space samplers (Euler) start from noise scaled by sigma_max; DDPM/DDIM by 1.
        latents = noise * scheduler.init_noise_sigma
    else:
        if not 0 <= start_index < len(timesteps):
            raise ValueError(f"start step must be in [0, {len(timesteps) - 1}], got {start_index}")
        timesteps = timesteps[start_index:]
        if hasattr(scheduler, "set_begin_index"):  # multistep / sigma schedulers track their position
            scheduler.set_begin_index(start_index)
        if start_sample is not None:  # an x_t of the reverse process: continued as it is
            latents = start_sample.to(noise.dtype)
        else:
            latents = scheduler.add_noise(init_sample.to(noise.dtype), noise, timesteps[:1])  # q_sample, DDPM Eq. 4
    if constrain is not None:
        latents = constrain(latents)
    step_kwargs: dict[str, object] = {"generator": generator}
    if eta is not None:
        step_kwargs["eta"] = eta
    for index, t in enumerate(timesteps):
        if refine is not None:
            latents = refine(latents, t, index)  # 0. z_t -> z_t' (needs autograd: outside inference mode)
        # Inference mode is thread-local: enter it inside each step, never across a ``yield``
        # (a streaming UI may resume this generator on another thread).
        with torch.inference_mode():
            # 1. the network's prediction at x_t (Euler rescales its input by 1/sqrt(sigma^2+1))
            model_input = scheduler.scale_model_input(latents, t)
            uncond = text = None
            if guidance is None:
                model_output = denoiser(model_input, t)
            else:
                model_output, uncond, text = guidance(model_input, t)
            # 2. x_t -> x_{t-1}: the sampler's update (DDPM Algorithm 2 line 4, DDIM Eq. 12, ...)
            out = scheduler.step(model_output, t, latents, **step_kwargs)
            prev_sample = out.prev_sample if constrain is None else constrain(out.prev_sample)
            pred_original_sample = getattr(out, "pred_original_sample", None)
            if pred_original_sample is None:
                pred_original_sample = predict_original_sample(scheduler, latents, model_output,
                                                               int(round(float(t))))
        yield StepRecord(
            index=index,
            num_steps=len(timesteps),
            timestep=float(t),
            sample=latents,
            model_input=model_input,
            model_output=model_output,
            pred_original_sample=pred_original_sample,
            prev_sample=prev_sample,
            noise_pred_uncond=uncond,
            noise_pred_text=text,
            guidance_scale=guidance_scale,
        )
        latents = prev_sample
