"""What the playground shows of a trained point model, all through the one loop (:mod:`diffusion.loop`).

- the reverse process of a particle cloud (any sampler of the app, a fresh diffusers scheduler each time);
- the forward process q(x_t | x_0) of the data (DDPM Eq. 4);
- the learned noise field eps_theta(x, t) on a grid and its score reading
  grad log p_t(x) ~ -eps_theta(x, t) / sqrt(1 - alpha_bar_t) (Song & Ermon 2019; Ho et al. 2020, Sec. 3.2);
- the paths of a few particles under DDPM (stochastic) and DDIM (deterministic) from the same noise;
- the denoising loss against t on fresh data.

Arrays are float32 numpy in the data's normalised units (unit variance); every draw goes through a
seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler

from diffusion.loop import StepRecord, denoise
from diffusion.playground.model import PointDenoiser
from diffusion.schedulers import make_scheduler

EXTENT = 3.2  # the views show [-EXTENT, EXTENT]^2 (data of unit variance, plus noise)


@dataclass
class ParticleRun:
    """A reverse process of ``n`` particles: ``x_t`` (S + 1, n, 2) from the starting noise x_T to the
    final x_0, ``pred_x0`` (S, n, 2) the model's estimate at each step, ``timesteps`` (S,) the t of each."""

    sampler: str
    x_t: np.ndarray
    pred_x0: np.ndarray
    timesteps: np.ndarray
    wall_s: float = 0.0


def particle_steps(model: PointDenoiser, sched_config: dict, sampler: str, steps: int, noise: torch.Tensor,
                   generator: torch.Generator, eta: float | None = None) -> Iterator[StepRecord]:
    """The loop's records for the particles ``noise`` (n, 2): the network is the loop's denoiser as is,
    with a fresh scheduler of ``sampler`` (schedulers keep per-run state)."""
    extra = {}
    if sampler == "dpmpp-2m" and sched_config.get("beta_schedule") == "squaredcos_cap_v2":
        # the cosine schedule's last alpha-bar is almost 0, so log-SNR -> -inf and DPM-Solver's first step diverged
        # (measured: SW_2 7.2 on two moons); diffusers' remedy for cosine schedules is to clip lambda at -5.1
        extra["lambda_min_clipped"] = -5.1
    scheduler = make_scheduler(sampler, sched_config, **extra)

    def eps_theta(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t)

    return denoise(eps_theta, scheduler, noise, steps, generator, eta=eta)


def forward_process(data: np.ndarray, sched_config: dict, timesteps: list[int], seed: int) -> np.ndarray:
    """x_t ~ q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for each t (DDPM Eq. 4), one eps
    draw for all: (len(timesteps), n, 2)."""
    scheduler = DDPMScheduler.from_config(sched_config)
    x_0 = torch.as_tensor(data, dtype=torch.float32)
    eps = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    return np.stack([scheduler.add_noise(x_0, eps, torch.tensor([int(t)])).numpy() for t in timesteps])


@dataclass
class NoiseField:
    """eps_theta(x, t) on a grid: ``points`` (G, G, 2) the grid, ``eps`` (G, G, 2) the predicted noise,
    ``score`` (G, G, 2) = -eps / sqrt(1 - alpha_bar_t), ``alpha_bar`` the schedule's alpha-bar at ``timestep``."""

    timestep: int
    alpha_bar: float
    points: np.ndarray
    eps: np.ndarray
    score: np.ndarray


def noise_field(model: PointDenoiser, sched_config: dict, timestep: int, grid: int = 21,
                extent: float = EXTENT) -> NoiseField:
    """The network's noise prediction on a ``grid`` x ``grid`` lattice over [-extent, extent]^2 at ``timestep``."""
    axis = torch.linspace(-extent, extent, grid)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xs, ys], -1).reshape(-1, 2)
    alpha_bar = float(DDPMScheduler.from_config(sched_config).alphas_cumprod[timestep])
    with torch.inference_mode():
        eps = model(points, torch.tensor(float(timestep))).float()
    score = -eps / (1 - alpha_bar) ** 0.5  # Tweedie / score matching: grad_x log p_t(x) = -eps / sigma_t
    return NoiseField(timestep, alpha_bar, points.reshape(grid, grid, 2).numpy(),
                      eps.reshape(grid, grid, 2).numpy(), score.reshape(grid, grid, 2).numpy())


@dataclass
class ParticlePaths:
    """The same starting noise (k, 2) run by DDPM with two noise seeds and by DDIM: each (S + 1, k, 2)."""

    ddpm: np.ndarray
    ddpm_other_seed: np.ndarray
    ddim: np.ndarray
    steps: int


def particle_paths(model: PointDenoiser, sched_config: dict, k: int, seed: int, steps: int) -> ParticlePaths:
    """``k`` particles from one x_T (seed ``seed``): DDPM's paths jitter (fresh noise at every step, a
    Langevin-like chain), DDIM's (eta = 0) follow a smooth deterministic ODE path."""
    start = torch.randn(k, 2, generator=torch.Generator().manual_seed(seed))

    def path(sampler: str, noise_seed: int) -> np.ndarray:
        records = list(particle_steps(model, sched_config, sampler, steps, start.clone(),
                                      torch.Generator().manual_seed(noise_seed), eta=0.0 if sampler == "ddim" else None))
        return torch.stack([records[0].sample] + [r.prev_sample for r in records]).float().numpy()

    return ParticlePaths(path("ddpm", seed + 1), path("ddpm", seed + 2), path("ddim", seed + 1), steps)


def loss_by_t(model: PointDenoiser, sched_config: dict, data: np.ndarray, bins: int = 20, seed: int = 0,
              per_bin: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The simple loss ||eps - eps_theta(x_t, t)||^2 / 2 (mean over the two coordinates) at ``bins`` evenly
    spaced t, ``per_bin`` fresh (x_0, eps) pairs each: (t (bins,), loss (bins,)). Near t = 0 the noise is
    tiny and hard to tell from the data's own spread; near T x_t is almost all noise and eps ~ x_t is easy."""
    T = int(sched_config["num_train_timesteps"])
    scheduler = DDPMScheduler.from_config(sched_config)
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(data, dtype=torch.float32)
    ts = np.linspace(0, T - 1, bins).round().astype(int)
    out = []
    with torch.inference_mode():
        for t in ts:
            x_0 = x[torch.randint(0, len(x), (per_bin,), generator=g)]
            eps = torch.randn(x_0.shape, generator=g)
            tt = torch.full((per_bin,), int(t))
            out.append(float(torch.nn.functional.mse_loss(model(scheduler.add_noise(x_0, eps, tt), tt), eps)))
    return ts.astype(np.float32), np.array(out, np.float32)
