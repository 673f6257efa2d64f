"""What one denoising step costs: the UNet's forward FLOPs (torch's flop counter) and its measured time,
for one image at the model's own sample size: pixel space against latent space (Rombach et al. 2022, Sec. 3)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusion.loading import unet_precision


@dataclass(frozen=True)
class StepCost:
    """One UNet call for one image: ``shape`` (C, H, W) of the tensor it denoises, ``flops`` of its forward pass
    (conditional branch only for text models; guidance doubles it), ``ms`` the median of ``repeats`` timed calls
    (in the model's precision, this machine), ``parameters`` the UNet's size."""

    model_id: str
    shape: tuple[int, int, int]
    flops: int
    ms: float
    parameters: int

    @property
    def values(self) -> int:
        c, h, w = self.shape
        return c * h * w


def check_factor(model: Any, factor: int) -> int:
    """The image side of ``model`` (pixels), or ``ValueError`` unless it is a latent model whose image side
    ``factor`` divides."""
    if getattr(model, "vae", None) is None:
        raise ValueError("only a latent model has counterparts at other downsampling factors")
    image_side = model.unet.config.sample_size * model.vae_scale_factor
    if factor < 1 or image_side % factor:
        raise ValueError(f"the downsampling factor must divide the image side {image_side}, got {factor}")
    return image_side


def step_cost(model: Any, repeats: int = 5, factor: int | None = None) -> StepCost:
    """The cost of one UNet step of ``model``. ``factor`` (latent models): the same UNet architecture built to
    denoise the latents of an autoencoder with downsampling factor ``factor`` (random weights: the cost depends
    only on the shapes); 1 is the decoded image itself (H x W x 3), what the autoencoder saves (Rombach et al.
    2022, Sec. 3)."""
    unet = model.unet
    if factor is not None:
        image_side = check_factor(model, factor)
        channels = 3 if factor == 1 else unet.config.in_channels
        unet = type(unet).from_config({**unet.config, "sample_size": image_side // factor, "in_channels": channels,
                                       "out_channels": channels})
        unet = unet.to(next(model.unet.parameters())).eval()
    param = next(unet.parameters())
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    x = torch.randn(1, unet.config.in_channels, height, width, generator=torch.Generator().manual_seed(0)).to(param)
    t = torch.tensor([500], device=param.device)
    kwargs: dict[str, torch.Tensor] = {}
    if getattr(model, "tokenizer", None) is not None:  # the conditional branch reads one prompt's embeddings
        length = int(model.tokenizer.model_max_length)
        kwargs["encoder_hidden_states"] = torch.zeros(1, length, unet.config.cross_attention_dim).to(param)

    def call() -> None:
        with unet_precision(param.device, model.autocast_dtype):
            unet(x, t, **kwargs)

    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            call()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            call()
            times.append((time.perf_counter() - began) * 1000)
    name = model.card.id if factor is None else f"{model.card.id} in pixels" if factor == 1 else f"{model.card.id} at f = {factor}"
    return StepCost(name, (unet.config.in_channels, height, width), int(counter.get_total_flops()),
                    statistics.median(times), sum(p.numel() for p in unet.parameters()))
