"""Perceptual compression against cost, by downsampling factor (Rombach et al. 2022, Sec. 4.1, Figs. 6 and 7).

Rombach et al. train latent diffusion models on autoencoders of downsampling factor f = 1 (pixels) to 32 and plot
sample quality against throughput: f = 1 and 2 are slow, f = 4 to 16 balance cost and quality, f = 32 loses too
much detail. Training one latent diffusion model per factor is beyond a 2-core laptop, so what is shown here are
the two sides of that trade, both measured, for autoencoders trained with one recipe
(``diffusion/training/train_autoencoder.py``, f = 2, 4 and 8, shipped in ``assets/autoencoders``; f = 1 is the
image itself):

* **cost**: one step of the ``ldm-shapes`` UNet architecture at each factor's latent shape (:mod:`diffusion.lab.cost`)
  and one decode, timed now on this machine, as seconds per sample of a guided DDIM run;
* **the quality bound**: every sample of a latent model is a decoder output, so no latent model can draw better
  than its autoencoder reconstructs. The reconstruction's PSNR and the shape judge's accuracy on reconstructions
  (written by ``python -m diffusion.metrics.compression_gate --write``) bound what a latent model at that factor
  could score.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL

from diffusion.images import from_uint8, to_uint8
from diffusion.lab.cost import StepCost, step_cost

#: The figure it reproduces (arXiv v2: sample quality against throughput by factor), linked beside it.
FIGURE_URL = "https://arxiv.org/pdf/2112.10752#figure.7"
#: The factors compared: 1 is the pixels (no autoencoder).
FACTORS = (1, 2, 4, 8)
#: The figures the gate writes beside the autoencoders.
RESULTS_FILE = "compression_results.json"


def autoencoder_folder(autoencoders: Path, factor: int) -> Path:
    """Where the autoencoder of downsampling factor ``factor`` lives in the folder ``autoencoders``
    (``assets/autoencoders`` ships f = 2, 4 and 8; diffusers format, safetensors)."""
    return autoencoders / f"kl-f{factor}"


def load_autoencoder(folder: Path) -> AutoencoderKL:
    """A saved ``AutoencoderKL`` (safetensors only) in fp32, for inference."""
    return AutoencoderKL.from_pretrained(folder, use_safetensors=True, torch_dtype=torch.float32).eval()


def downsampling_factor(vae: AutoencoderKL) -> int:
    """f = 2^(number of encoder blocks - 1): each block but the last halves the side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.inference_mode()
def reconstruct(vae: AutoencoderKL | None, images: np.ndarray) -> np.ndarray:
    """D(E(x)) with the posterior's mean (Rombach et al. 2022, Sec. 3.1) of uint8 images (B, H, W, 3), as uint8 of
    the same shape; ``vae`` None (f = 1) returns the images themselves."""
    if vae is None:
        return images.copy()
    x = from_uint8(images)
    return to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of uint8 images (torchmetrics, data range 255); infinity for identical images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    a, b = torch.from_numpy(reference.astype(np.float32)), torch.from_numpy(test.astype(np.float32))
    if torch.equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(b, a, data_range=255.0))


@torch.inference_mode()
def decode_ms(vae: AutoencoderKL | None, side: int, repeats: int = 3) -> float:
    """The median time in ms to decode one latent of an image of ``side`` pixels (0 for f = 1: nothing to decode)."""
    if vae is None:
        return 0.0
    f = downsampling_factor(vae)
    z = torch.randn(1, vae.config.latent_channels, side // f, side // f, generator=torch.Generator().manual_seed(0))
    vae.decode(z)  # warm
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        vae.decode(z)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class FactorRow:
    """One downsampling factor: ``cost`` of one UNet step at its latent shape (C, H, W), ``decode_ms`` of one
    decode, ``reconstruction`` uint8 (H, W, 3) of the shown image and its ``psnr`` (dB, inf at f = 1), and the
    gate's ``bound`` on held-out scenes (``psnr``, the judge's ``exact``, ``shape``, ...; empty when the file is
    missing)."""

    factor: int
    cost: StepCost
    decode_ms: float
    reconstruction: np.ndarray
    psnr: float
    bound: dict[str, float]

    def seconds_per_sample(self, steps: int = 25, guided: bool = True) -> float:
        """One sample's time: ``steps`` UNet calls (two each with classifier-free guidance) and one decode."""
        return (steps * (2 if guided else 1) * self.cost.ms + self.decode_ms) / 1000


@dataclass(frozen=True)
class Compression:
    """The trade by factor for one image: ``rows`` in order of f, the ``steps`` and guidance of the costed run."""

    rows: tuple[FactorRow, ...]
    steps: int = 25
    guided: bool = True


def read_bounds(folder: Path) -> dict[int, dict[str, float]]:
    """The gate's figures per factor (``folder/compression_results.json``): {f: {"psnr": ..., "exact": ...}};
    empty when the file is missing."""
    path = folder / RESULTS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {int(f): {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
            for f, row in data.get("factors", {}).items()}


class Autoencoders:
    """The autoencoders of :data:`FACTORS` in ``folder`` (``kl-f2``, ``kl-f4``, ``kl-f8`` and the gate's
    ``compression_results.json``), each loaded when first asked for and kept."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._loaded: dict[int, AutoencoderKL] = {}

    def get(self, factor: int) -> AutoencoderKL:
        """The autoencoder of ``factor``; ``ValueError`` saying how to make it when it is missing."""
        if factor not in self._loaded:
            folder = autoencoder_folder(self.folder, factor)
            if not (folder / "config.json").is_file():
                raise ValueError(f"the autoencoder with f = {factor} is missing ({folder}); train it as "
                                 "docs/models.md says (diffusion/training/train_autoencoder.py)")
            vae = load_autoencoder(folder)
            if downsampling_factor(vae) != factor:
                raise ValueError(f"{folder} holds an autoencoder with f = {downsampling_factor(vae)}, not {factor}")
            self._loaded[factor] = vae
        return self._loaded[factor]

    def load_all(self) -> None:
        """Load every factor's autoencoder now (``ValueError`` for a missing one), before :meth:`compare` runs."""
        for factor in FACTORS[1:]:
            self.get(factor)

    def compare(self, model: Any, image: np.ndarray, repeats: int = 3) -> Compression:
        """The trade for one uint8 image (H, W, 3) of the latent ``model``'s size: at each factor the
        reconstruction and its PSNR, one step of ``model``'s UNet architecture at that factor's latent shape and one
        decode, timed now (median of ``repeats``), and the gate's figures on held-out scenes."""
        side = model.unet.config.sample_size * model.vae_scale_factor
        image = np.asarray(image)
        if image.shape != (side, side, 3) or image.dtype != np.uint8:
            raise ValueError(f"the image must be uint8 {side}x{side}x3, got {image.dtype} {image.shape}")
        bounds = read_bounds(self.folder)
        rows = []
        for f in FACTORS:
            vae = None if f == 1 else self.get(f)
            recon = reconstruct(vae, image[None])[0]
            rows.append(FactorRow(f, step_cost(model, repeats=repeats, factor=f), decode_ms(vae, side, repeats),
                                  recon, psnr(image, recon), bounds.get(f, {})))
        return Compression(tuple(rows))
