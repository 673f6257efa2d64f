"""Sampling with loaded components, on top of the one loop in :mod:`diffusion.loop`.

Pixel models (``UNet2DModel``) and latent text models (``UNet2DConditionModel`` + VAE +
text encoder) share :func:`diffusion.loop.denoise`; this module only builds the initial
noise, the denoiser closure (with classifier-free guidance for text models) and the
decoding from model space to images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from diffusion.attention import AttentionMaps, AttentionStore, recording
from diffusion.loop import StepRecord, denoise
from diffusion.schedulers import get_sampler, make_scheduler, max_steps_for

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SampleRequest:
    """Everything that determines a set of images (with the model's weights).

    ``seed`` in [0, 2^32 - 1]; ``steps`` in [1, num_train_timesteps]; ``eta`` in [0, 1]
    (DDIM only); ``guidance_scale`` >= 0 (text models; 1 means no guidance).
    """

    sampler: str = "ddim"
    steps: int = 50
    n: int = 16
    seed: int = 0
    eta: float = 0.0
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 1.0


def make_generator(seed: int) -> torch.Generator:
    """The request's only source of randomness: a CPU generator (same seed, same image)."""
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    return torch.Generator("cpu").manual_seed(int(seed))


def check_request(request: SampleRequest, scheduler_config: dict[str, Any], max_batch: int) -> None:
    """Raise ``ValueError`` with a readable message when a request is out of range."""
    get_sampler(request.sampler)
    limit = max_steps_for(scheduler_config)
    if not 1 <= request.steps <= limit:
        raise ValueError(f"steps must be between 1 and {limit}, got {request.steps}")
    if not 1 <= request.n <= max_batch:
        raise ValueError(f"batch size must be between 1 and {max_batch}, got {request.n}")
    if not (np.isfinite(request.eta) and 0.0 <= request.eta <= 1.0):
        raise ValueError(f"eta must be between 0 and 1, got {request.eta}")
    if not (np.isfinite(request.guidance_scale) and 0.0 <= request.guidance_scale <= 30.0):
        raise ValueError(f"guidance scale must be between 0 and 30, got {request.guidance_scale}")
    make_generator(request.seed)


def sample_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """x_T ~ N(0, I), drawn on the CPU generator exactly as diffusers' pipelines draw it."""
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def unet_precision(device: torch.device, autocast_dtype: torch.dtype | None) -> AbstractContextManager:
    """The context the UNet runs in: ``torch.autocast`` in ``autocast_dtype``, or nothing (its own dtype)."""
    return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()


def pixel_steps(unet: torch.nn.Module, scheduler_config: dict[str, Any],
                request: SampleRequest, init_sample: torch.Tensor | None = None,
                start_index: int = 0, autocast_dtype: torch.dtype | None = None) -> Iterator[StepRecord]:
    """Unconditional pixel-space DDPM sampling (Ho et al. 2020, Algorithm 2).

    Yields one record per step; the last record's ``prev_sample`` is x_0 in [-1, 1]
    (B, C, H, W). Equals ``DDPMPipeline`` / ``DDIMPipeline`` for the same seed. With
    ``init_sample`` (B, C, H, W) in [-1, 1] it starts from that image noised to step
    ``start_index`` (SDEdit). With ``autocast_dtype`` (bf16) the UNet runs under autocast and
    its output is cast back to float32 before the scheduler's update.
    """
    scheduler = make_scheduler(request.sampler, scheduler_config)
    generator = make_generator(request.seed)
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    param = next(unet.parameters())
    noise = sample_noise((request.n, unet.config.in_channels, height, width), generator,
                         param.device, param.dtype)

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with unet_precision(param.device, autocast_dtype):
            out = unet(x, t).sample
        return out.to(param.dtype)

    eta = request.eta if get_sampler(request.sampler).uses_eta else None
    yield from denoise(denoiser, scheduler, noise, request.steps, generator=generator, eta=eta,
                       init_sample=init_sample, start_index=start_index)


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]: the inverse of ``to_uint8``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W) for one channel, (B, H, W, 3) for RGB."""
    arr = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    arr = arr.transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W) or (N, H, W, 3) into one uint8 grid image."""
    n = len(images)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    h, w = images.shape[1:3]
    shape = (nrows * (h + pad) + pad, ncols * (w + pad) + pad, *images.shape[3:])
    grid = np.full(shape, 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


@dataclass(frozen=True)
class PromptTokens:
    """How a prompt was read: its tokens, words the tokenizer does not know, words cut off."""

    tokens: list[str]
    unknown_words: list[str]
    truncated_words: list[str]


def read_prompt(tokenizer: Any, prompt: str) -> PromptTokens:
    """Tokenize ``prompt`` as the text encoder will, reporting unknown and truncated words."""
    max_tokens = int(tokenizer.model_max_length) - 2  # start and end tokens
    words = prompt.split()
    unk = getattr(tokenizer, "unk_token", None)
    vocab = tokenizer.get_vocab()
    unknown: list[str] = []
    tokens: list[str] = []
    truncated: list[str] = []
    for word in words:
        pieces = tokenizer.tokenize(word)
        if unk is not None and (unk in pieces or any(p not in vocab for p in pieces)):
            unknown.append(word)
        if len(tokens) + len(pieces) > max_tokens:
            truncated.append(word)
            continue
        tokens.extend(pieces)
    return PromptTokens(tokens, unknown, truncated)


def encode_prompt(model: Any, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (B, L, D) for a batch of prompts, padded to the tokenizer's max length."""
    with model.tokenizer_lock:  # fast tokenizers are not re-entrant ("Already borrowed")
        ids = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
    return model.text_encoder(ids.to(model.device))[0].to(model.dtype)


def latent_steps(model: Any, request: SampleRequest, prompts: Sequence[str] | None = None,
                 init_sample: torch.Tensor | None = None, start_index: int = 0,
                 record_attention: bool = False) -> Iterator[StepRecord]:
    """Latent text-to-image sampling with classifier-free guidance (Rombach et al. 2022).

    ``model`` is a :class:`diffusion.loading.LatentTextModel`. Guidance is on when
    ``guidance_scale > 1``: eps = eps(x, "") + w (eps(x, prompt) - eps(x, "")), with the
    negative prompt in place of "" when given (Ho & Salimans 2022, Eq. 6). ``prompts``
    (``request.n`` of them) gives each image its own prompt (batched evaluation); by default
    every image gets ``request.prompt``. Yields one record per step; the last record's
    ``prev_sample`` is the final latent (B, C, h, w). ``init_sample`` (scaled latents of an
    image) starts the run at step ``start_index`` (SDEdit in latent space). With
    ``record_attention`` each record also carries the conditional branch's cross-attention
    maps (:class:`diffusion.attention.AttentionMaps`, (n, L, h, w) per resolution); the
    images are the same as without.
    """
    if prompts is not None and len(prompts) != request.n:
        raise ValueError(f"got {len(prompts)} prompts for {request.n} images")
    scheduler = make_scheduler(request.sampler, model.scheduler_config)
    generator = make_generator(request.seed)
    do_guidance = request.guidance_scale > 1.0
    with torch.inference_mode():  # entered and left before the first yield (thread-local)
        text = encode_prompt(model, list(prompts) if prompts is not None else [request.prompt] * request.n)
        context = torch.cat([encode_prompt(model, [request.negative_prompt] * request.n), text]) if do_guidance \
            else text
        size = model.card.resolution // model.vae_scale_factor
        noise = sample_noise((request.n, model.unet.config.in_channels, size, size), generator,
                             model.device, model.dtype)

    maps: list[AttentionMaps] = []

    autocast_dtype = getattr(model, "autocast_dtype", None)

    def unet(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        with unet_precision(model.device, autocast_dtype):
            if not record_attention:
                return model.unet(x, t, encoder_hidden_states=states).sample.to(model.dtype)
            # the store is active only inside this call (the generator may resume on another thread)
            with recording(AttentionStore((size, size))) as store:
                out = model.unet(x, t, encoder_hidden_states=states).sample.to(model.dtype)
        maps.append(store.maps().select(slice(-request.n, None)))  # the conditional images are last
        return out

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, t, text)

    def guidance(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # one batched call for both halves: [uncond; cond]
        out = unet(torch.cat([x, x]), t, context)
        noise_pred_uncond, noise_pred_text = out.chunk(2)
        guided = noise_pred_uncond + request.guidance_scale * (noise_pred_text - noise_pred_uncond)
        return guided, noise_pred_uncond, noise_pred_text

    eta = request.eta if get_sampler(request.sampler).uses_eta else None
    for record in denoise(denoiser, scheduler, noise, request.steps, generator=generator, eta=eta,
                          guidance=guidance if do_guidance else None,
                          guidance_scale=request.guidance_scale if do_guidance else None,
                          init_sample=init_sample, start_index=start_index):
        if record_attention:
            record.cross_attention = maps.pop()
        yield record


def decode_latents(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, h, w) -> images (B, 3, H, W) in [-1, 1] through the VAE decoder."""
    with torch.inference_mode():
        return model.vae.decode(latents.float() / model.scaling_factor).sample.clamp(-1, 1)
