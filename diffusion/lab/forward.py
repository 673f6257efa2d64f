"""The forward process on the user's image, and where SDEdit starts (Ho et al. 2020, Eq. 4; Meng et al. 2022).

q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I): one fixed noise draw per seed, so the
slider over t shows one image fading into one noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.images import latent_channels, prepare_image
from diffusion.pipeline import (
    decode_latents,
    encode_image,
    image_size,
    pictures,
    sample_noise,
)
from diffusion.request import make_generator


@dataclass(frozen=True)
class ForwardView:
    """q(x_t | x_0) for the user's image at one t, with one fixed noise draw (Ho et al. 2020, Eq. 4).

    ``x0`` is the image as the model sees it (resized, grayscale for one-channel models; for latent
    models the autoencoder's reconstruction), ``x_t`` the noised image (latent models: decoded);
    ``signal_coef`` = sqrt(alpha-bar_t), ``noise_coef`` = sqrt(1 - alpha-bar_t).
    """

    timestep: int
    alpha_prod_t: float
    signal_coef: float
    noise_coef: float
    x0: np.ndarray
    x_t: np.ndarray
    x_t_std: float  # standard deviation of x_t in model space (tends to 1 as t -> T)
    x0_std: float
    latents: np.ndarray | None = None  # latent models: the 4 channels of x_t side by side
    reconstruction_psnr: float | None = None  # latent models: PSNR of the autoencoder's reconstruction


def _noised(model: Any, scheduler: SchedulerMixin, image: np.ndarray, timesteps: Sequence[int],
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_0 (1, C, h, w) and x_t (len(timesteps), C, h, w): the image encoded once, noised with one draw;
    ``timesteps`` each in [0, T - 1] (checked by the caller, :meth:`diffusion.studio.Studio.forward_process`)."""
    ts = [int(t) for t in timesteps]
    x0 = encode_image(model, image)
    noise = sample_noise(tuple(x0.shape), make_generator(seed), x0.device, x0.dtype)
    n = len(ts)
    x_t = scheduler.add_noise(x0.expand(n, -1, -1, -1), noise.expand(n, -1, -1, -1), torch.tensor(ts))  # q_sample
    return x0, x_t


def _shown(model: Any, x: torch.Tensor) -> np.ndarray:
    """Pixel models' x_t clipped to [-1, 1] for showing; latent models' decoded."""
    return pictures(model, x if getattr(model, "vae", None) is not None else x.clamp(-1, 1))


def forward_process(model: Any, scheduler: SchedulerMixin, image: np.ndarray, timestep: int,
                    seed: int = 0) -> ForwardView:
    """x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps (Ho et al. 2020, Eq. 4) for uint8 ``image``."""
    x0, x_t = _noised(model, scheduler, image, [timestep], seed)
    t = int(timestep)
    ab = float(scheduler.alphas_cumprod[t])
    latents = psnr = None
    if getattr(model, "vae", None) is not None:
        latents = latent_channels(x_t[0])
        recon = decode_latents(model, x0)
        target = prepare_image(image, image_size(model), 3)
        psnr = float(10 * torch.log10(4.0 / ((recon.cpu() - target) ** 2).mean().clamp_min(1e-12)))
    return ForwardView(t, ab, ab**0.5, (1 - ab) ** 0.5, pictures(model, x0)[0], _shown(model, x_t)[0],
                       float(x_t.float().std()), float(x0.float().std()), latents, psnr)


def forward_strip(model: Any, scheduler: SchedulerMixin, image: np.ndarray, timesteps: Sequence[int],
                  seed: int = 0) -> np.ndarray:
    """x_t of one image at several t, uint8 (len(timesteps), H, W[, 3]), with the same single noise
    draw as :func:`forward_process` uses for ``seed``."""
    _, x_t = _noised(model, scheduler, image, timesteps, seed)
    return _shown(model, x_t)


def start_index(scheduler: SchedulerMixin, num_steps: int, timestep: int) -> int:
    """The first step of a ``num_steps`` run at or below training timestep ``timestep`` (SDEdit's start)."""
    scheduler.set_timesteps(num_steps)
    below = [i for i, t in enumerate(scheduler.timesteps.tolist()) if t <= timestep]
    return below[0] if below else len(scheduler.timesteps) - 1
