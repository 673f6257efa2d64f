"""Noise schedules as curves over the training timesteps (Ho et al. 2020, Eq. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class ScheduleCurves:
    """A noise schedule over training timesteps t = 0..T-1: beta_t and alpha-bar_t = prod(1 - beta_s)."""

    timesteps: np.ndarray
    betas: np.ndarray
    alphas_cumprod: np.ndarray  # alpha-bar_t

    @property
    def log_snr(self) -> np.ndarray:
        """log SNR(t) = log(alpha-bar_t / (1 - alpha-bar_t)) (Kingma et al. 2021)."""
        return np.log(self.alphas_cumprod) - np.log1p(-self.alphas_cumprod)

    @classmethod
    def of(cls, scheduler: SchedulerMixin) -> ScheduleCurves:
        """The training schedule a scheduler was built with (float64 copies)."""
        betas = scheduler.betas.numpy().astype(np.float64)
        return cls(np.arange(len(betas)), betas, scheduler.alphas_cumprod.numpy().astype(np.float64))


# DDPM's linear schedule (Ho et al. 2020), Stable Diffusion's scaled-linear and the cosine schedule
# (Nichol & Dhariwal 2021, Eq. 17), as diffusers' scheduler configs
CLASSIC_SCHEDULES = {
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    "scaled-linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
}


def schedule_family(num_train_timesteps: int = 1000) -> dict[str, ScheduleCurves]:
    """The three classic schedules over ``num_train_timesteps`` steps, for comparison."""
    return {name: ScheduleCurves.of(DDPMScheduler(num_train_timesteps=num_train_timesteps, **config))
            for name, config in CLASSIC_SCHEDULES.items()}
