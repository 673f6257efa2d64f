"""The samplers the app offers, as diffusers schedulers.

Each request gets a fresh scheduler built with ``from_config`` from the model's own
scheduler config: schedulers keep per-run state (``timesteps``, ``step_index``, the
multistep history) and are not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: a diffusers scheduler class and the config overrides that define it."""

    name: str
    title: str
    scheduler_cls: type[SchedulerMixin]
    overrides: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # draws fresh noise at each step
    uses_eta: bool = False  # DDIM's eta (0: deterministic DDIM, 1: DDPM-like variance)


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("ddpm", "DDPM (ancestral)", DDPMScheduler, stochastic=True),
        SamplerSpec("ddim", "DDIM", DDIMScheduler, uses_eta=True),
        SamplerSpec("dpmpp-2m", "DPM-Solver++ 2M", DPMSolverMultistepScheduler,
                    {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        SamplerSpec("euler", "Euler", EulerDiscreteScheduler),
        SamplerSpec("euler-a", "Euler ancestral", EulerAncestralDiscreteScheduler, stochastic=True),
    )
}

def get_sampler(name: str) -> SamplerSpec:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None


def make_scheduler(name: str, base_config: dict[str, Any], **extra: Any) -> SchedulerMixin:
    """A fresh scheduler of sampler ``name`` built from a model's scheduler config (``extra``: more overrides)."""
    spec = get_sampler(name)
    overrides = dict(spec.overrides)
    if spec.scheduler_cls is DPMSolverMultistepScheduler and base_config.get("clip_sample", False):
        # Pixel-space models clip x0 to the data range in DDPM/DDIM; DPM-Solver++ does the same
        # with dynamic thresholding, as Lu et al. 2022 recommend for pixel-space models.
        overrides.setdefault("thresholding", True)
        overrides.setdefault("sample_max_value", float(base_config.get("clip_sample_range", 1.0)))
    overrides.update(extra)
    return spec.scheduler_cls.from_config(base_config, **overrides)


def max_steps_for(base_config: dict[str, Any]) -> int:
    """The largest step count a scheduler accepts: the number of training timesteps T (diffusers'
    default is 1000), less the ``steps_offset`` of "leading" spacing: Stable Diffusion's configs
    (offset 1) shift every timestep up by one, so T steps would ask for timestep T, one past the last
    (an IndexError inside the scheduler, found by a 100-step DDPM run of an SD-style model with T = 100)."""
    steps = int(base_config.get("num_train_timesteps", 1000))
    if base_config.get("timestep_spacing", "leading") == "leading":
        steps -= int(base_config.get("steps_offset", 0) or 0)
    return max(1, steps)
