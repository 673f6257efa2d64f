"""What the network learned: its own denoising error against t, on images it never trained on.

Algorithm 1 (Ho et al. 2020) trains eps_theta to predict the noise in x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps (Eq. 4). Measured on held-out images, the error ||eps - eps_theta(x_t, t)||^2
(per pixel) shows where the task is easy and where it is impossible: at small t the noise is a faint
film over a clear image and hard to tell from the image's own texture, so the error is large; at large t
x_t is almost all noise, eps ~ x_t, and the error is small. Predicting zero scores 1 everywhere. The
x_0 estimate (Eq. 15) shows the other side: sharp at small t, a blurry average at large t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.loading import unet_precision
from diffusion.loop import predict_original_sample, predicted_noise
from diffusion.pipeline import encode_image, pictures, sample_noise
from diffusion.request import make_generator


@dataclass
class DenoisingError:
    """``timesteps`` (K,) and ``error`` (K,): the mean squared noise-prediction error per pixel over the
    images at each t (``spread`` (K,): its standard deviation over the images); ``examples``: for the
    first image at each t of ``shown``, uint8 pictures (x_t, predicted noise, predicted x_0)."""

    timesteps: np.ndarray
    error: np.ndarray
    spread: np.ndarray
    images: int
    shown: list[int]
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _noise_picture(eps: torch.Tensor) -> np.ndarray:
    """A noise tensor (C, H, W) of unit scale as uint8: [-3, 3] mapped to [0, 255]."""
    return (eps.float().clamp(-3, 3).add(3).div(6).mul(255).round().to(torch.uint8)).permute(1, 2, 0).squeeze(-1).numpy()


def denoising_error(model: Any, scheduler: SchedulerMixin, images: Sequence[np.ndarray], timesteps: Sequence[int],
                    shown: Sequence[int], seed: int = 0) -> DenoisingError:
    """The pixel model's noise-prediction error at each of ``timesteps`` on the uint8 ``images``, one noise
    draw per image (the same at every t, seeded), and example pictures at the t in ``shown``."""
    unet = model.unet
    param = next(unet.parameters())
    x0 = torch.cat([encode_image(model, image) for image in images])  # (N, C, H, W) in [-1, 1]
    eps = sample_noise(tuple(x0.shape), make_generator(seed), param.device, param.dtype)
    errors, spreads, examples = [], [], []
    with torch.inference_mode():
        for t in timesteps:
            tt = torch.full((len(x0),), int(t), device=param.device)
            x_t = scheduler.add_noise(x0, eps, tt)  # Eq. 4
            with unet_precision(param.device, model.autocast_dtype):
                out = unet(x_t, tt).sample
            out = out.to(param.dtype)
            eps_hat = predicted_noise(scheduler, x_t, out, int(t))
            per_image = (eps_hat - eps).pow(2).flatten(1).mean(1)  # the simple loss, Eq. 14, per pixel
            errors.append(float(per_image.mean()))
            spreads.append(float(per_image.std()) if len(per_image) > 1 else 0.0)
            if int(t) in shown:
                x0_hat = predict_original_sample(scheduler, x_t[:1], out[:1], int(t)).clamp(-1, 1)  # Eq. 15
                examples.append((pictures(model, x_t[:1].clamp(-1, 1))[0], _noise_picture(eps_hat[0]),
                                 pictures(model, x0_hat)[0]))
    return DenoisingError(np.asarray([int(t) for t in timesteps]), np.asarray(errors), np.asarray(spreads),
                          len(x0), [int(t) for t in timesteps if int(t) in shown], examples)
