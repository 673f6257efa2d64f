"""Sampling with loaded components, on top of the one loop in :mod:`diffusion.loop`.

Pixel models (``UNet2DModel``) and latent text models (``UNet2DConditionModel`` + VAE +
text encoder) share :func:`diffusion.loop.denoise`; this module only builds the initial
noise, the denoiser closure (with classifier-free guidance for text models) and the
decoding from model space to images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from diffusion.attention import AttentionMaps, AttentionStore, recording
from diffusion.excite import ExciteConfig, ExciteStep, make_refiner, subject_indices
from diffusion.images import prepare_image, to_uint8
from diffusion.layout import Layout, LayoutStep, compose, layout_masks, phase, plan_images, region_weights
from diffusion.loading import unet_forward, unet_precision
from diffusion.loop import StepRecord, denoise
from diffusion.prompts import encode_prompt, token_labels
from diffusion.request import SampleRequest, make_generator
from diffusion.schedulers import get_sampler, make_scheduler


def sample_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """x_T ~ N(0, I), drawn on the CPU generator exactly as diffusers' pipelines draw it."""
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def pixel_steps(unet: torch.nn.Module, scheduler_config: dict[str, Any],
                request: SampleRequest, init_sample: torch.Tensor | None = None,
                start_index: int = 0, autocast_dtype: torch.dtype | None = None,
                scheduler: SchedulerMixin | None = None,
                start_sample: torch.Tensor | None = None) -> Iterator[StepRecord]:
    """Unconditional pixel-space DDPM sampling (Ho et al. 2020, Algorithm 2).

    Yields one record per step; the last record's ``prev_sample`` is x_0 in [-1, 1]
    (B, C, H, W). Equals ``DDPMPipeline`` / ``DDIMPipeline`` for the same seed. With
    ``init_sample`` (B, C, H, W) in [-1, 1] it starts from that image noised to step
    ``start_index`` (SDEdit). With ``autocast_dtype`` (bf16) the UNet runs under autocast and
    its output is cast back to float32 before the scheduler's update. ``scheduler``: the run's own
    fresh scheduler when the caller built it already (else one is built from ``scheduler_config``).
    ``start_sample``: an x_t of an earlier run (B, C, H, W), continued as it is from step ``start_index``
    (:func:`diffusion.loop.denoise`).
    """
    scheduler = scheduler or make_scheduler(request.sampler, scheduler_config)
    generator = make_generator(request.seed)
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    param = next(unet.parameters())
    noise = sample_noise((request.n, unet.config.in_channels, height, width), generator,
                         param.device, param.dtype)

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet_forward(unet, x, t, autocast_dtype).to(param.dtype)

    eta = request.eta if get_sampler(request.sampler).uses_eta else None
    yield from denoise(denoiser, scheduler, noise, request.steps, generator=generator, eta=eta,
                       init_sample=init_sample, start_index=start_index, start_sample=start_sample)


def latent_steps(model: Any, request: SampleRequest, prompts: Sequence[str] | None = None,
                 init_sample: torch.Tensor | None = None, start_index: int = 0,
                 record_attention: bool = False, scheduler: SchedulerMixin | None = None) -> Iterator[StepRecord]:
    """Latent text-to-image sampling with classifier-free guidance (Rombach et al. 2022).

    ``model`` is a :class:`diffusion.loading.LatentTextModel`. Guidance is on when
    ``guidance_scale > 1``: eps = eps(x, "") + w (eps(x, prompt) - eps(x, "")), with the
    negative prompt in place of "" when given (Ho & Salimans 2022, Eq. 6, whose w is this w - 1: diffusers'
    convention, where w = 1 is the plain conditional model). ``prompts``
    (``request.n`` of them) gives each image its own prompt (batched evaluation); by default
    every image gets ``request.prompt``. Yields one record per step; the last record's
    ``prev_sample`` is the final latent (B, C, h, w). ``init_sample`` (scaled latents of an
    image) starts the run at step ``start_index`` (SDEdit in latent space). With
    ``record_attention`` each record also carries the conditional branch's cross-attention
    maps (:class:`diffusion.attention.AttentionMaps`, (n, L, h, w) per resolution); the
    images are the same as without. ``scheduler``: the run's own fresh scheduler, as for
    :func:`pixel_steps`.

    With ``request.layout`` "auto", images whose prompts name two objects are drawn by layout
    (:func:`layout_steps`); "off", and every other prompt, take the plain path here, unchanged.
    """
    if prompts is not None and len(prompts) != request.n:
        raise ValueError(f"got {len(prompts)} prompts for {request.n} images")
    prompt_list = list(prompts) if prompts is not None else [request.prompt] * request.n
    layouts = request_layouts(request, prompt_list)
    if any(layout is not None for layout in layouts):
        yield from layout_steps(model, request, prompt_list, layouts, init_sample, start_index, scheduler)
        return
    scheduler = scheduler or make_scheduler(request.sampler, model.scheduler_config)
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
        if not record_attention:
            return unet_forward(model.unet, x, t, autocast_dtype, encoder_hidden_states=states).to(model.dtype)
        with unet_precision(model.device, autocast_dtype):
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

    excited: list[ExciteStep] = []
    refine = None
    if request.attend_excite:
        refine = attend_and_excite(model, prompts if prompts is not None else [request.prompt] * request.n,
                                   text, size, request.steps, excited)
    eta = request.eta if get_sampler(request.sampler).uses_eta else None
    for record in denoise(denoiser, scheduler, noise, request.steps, generator=generator, eta=eta,
                          guidance=guidance if do_guidance else None,
                          guidance_scale=request.guidance_scale if do_guidance else None,
                          init_sample=init_sample, start_index=start_index, refine=refine):
        if record_attention:
            record.cross_attention = maps.pop()
        if excited and excited[-1].index == record.index:
            record.excite = excited[-1]
        yield record


def request_layouts(request: SampleRequest, prompts: Sequence[str] | None = None) -> list[Layout | None]:
    """The planned layout of each image of ``request`` (``prompts``: one per image, else ``request.prompt``), as
    :func:`latent_steps` draws it: None for an image drawn by the plain model. Attend-and-Excite edits the plain
    prompt's attention, so it and the layout are alternatives."""
    prompt_list = [str(p) for p in prompts] if prompts is not None else [str(request.prompt)] * int(request.n)
    return plan_images(prompt_list, int(request.seed), "off" if request.attend_excite else request.layout)


def layout_steps(model: Any, request: SampleRequest, prompts: Sequence[str], layouts: Sequence[Layout | None],
                 init_sample: torch.Tensor | None = None, start_index: int = 0,
                 scheduler: SchedulerMixin | None = None) -> Iterator[StepRecord]:
    """Two-object prompts drawn by their planned layouts (:mod:`diffusion.layout`), through the one loop.

    The loop's state holds one trajectory per object, stacked: [first objects; second objects] (2B, C, h, w).
    Each step runs in one of the phases of :func:`diffusion.layout.phase`:

    - "joint" (the first half): both trajectories are one state x_t; its conditional prediction is composed
      from the objects' own captions, each in its region (MultiDiffusion, Bar-Tal et al. 2023, Eq. 5), then
      guided with the one unconditional prediction: B rows each for the unconditional and the two captions.
    - "apart": each object's trajectory follows its own caption, guided with its own unconditional prediction;
      seeing the other object in x_t, a caption's prediction changes that object's colour or shape.
    - "apart, unguided" (the last fifth): the same without guidance (guidance in a limited interval,
      Kynkäänniemi et al. 2024).

    Every record the caller sees is the composition of the two trajectories with the regions' weights
    (every sampler's update is linear in x_t and the model output, so the composed state follows the composed
    update), with ``layout`` holding what each region predicted. ``prompts``/``layouts``: one per image; an
    image without a layout keeps its whole prompt in both trajectories and weight 1 on the first.
    """
    n = request.n
    scheduler = scheduler or make_scheduler(request.sampler, model.scheduler_config)
    generator = make_generator(request.seed)
    do_guidance = request.guidance_scale > 1.0
    size = model.card.resolution // model.vae_scale_factor
    with torch.inference_mode():  # entered and left before the first yield (thread-local)
        # one caption per object: its own words at its cell on the planned background
        captions = [c for p, layout in zip(prompts, layouts, strict=True)
                    for c in (layout.captions() if layout is not None else [p, p])]
        text = encode_prompt(model, captions).unflatten(0, (n, 2)).transpose(0, 1).flatten(0, 1)  # [A; B]
        negative = encode_prompt(model, [request.negative_prompt] * n)
        weights = torch.stack([region_weights(layout_masks(layout, size)) if layout is not None
                               else torch.stack([torch.ones(size, size), torch.zeros(size, size)])
                               for layout in layouts]).to(model.device)  # (B, 2, h, w)
        noise = sample_noise((n, model.unet.config.in_channels, size, size), generator, model.device, model.dtype)
    autocast_dtype = getattr(model, "autocast_dtype", None)
    w = request.guidance_scale
    kept: list[LayoutStep] = []
    clock = {"index": 0, "steps": request.steps - start_index}

    def unet(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return unet_forward(model.unet, x, t, autocast_dtype, encoder_hidden_states=states).to(model.dtype)

    def pair(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x])

    def by_object(x2: torch.Tensor) -> torch.Tensor:
        """[first objects; second objects] (2B, ...) -> (B, 2, ...)."""
        return x2.unflatten(0, (2, n)).transpose(0, 1)

    def guidance(x2: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        stage = phase(clock["index"], clock["steps"])
        clock["index"] += 1
        if stage == "joint":
            x = x2[:n]  # both trajectories are the same state here
            out = unet(torch.cat([x, x, x] if do_guidance else [x, x]), t,
                       torch.cat([negative, text]) if do_guidance else text)
            uncond = pair(out[:n]) if do_guidance else None
            per_object = out[-2 * n:]
            cond = pair(compose(by_object(per_object), weights))
        else:
            guided_here = do_guidance and stage == "apart"
            out = unet(torch.cat([x2, x2]) if guided_here else x2, t,
                       torch.cat([pair(negative), text]) if guided_here else text)
            uncond = out[:2 * n] if guided_here else None
            per_object = cond = out[-2 * n:]
        kept.append(LayoutStep(list(layouts), weights, by_object(per_object), by_object(x2),
                               None if uncond is None else by_object(uncond), stage))
        guided = cond if uncond is None else uncond + w * (cond - uncond)
        return guided, uncond, cond

    def together(x2: torch.Tensor) -> torch.Tensor:
        """In the joint phase both trajectories are one state: stochastic samplers drew their noise per row."""
        return pair(x2[:n]) if phase(clock["index"], clock["steps"]) == "joint" else x2

    def composed_view(x2: torch.Tensor | None) -> torch.Tensor | None:
        return None if x2 is None else compose(by_object(x2), weights)

    eta = request.eta if get_sampler(request.sampler).uses_eta else None
    for record in denoise(None, scheduler, pair(noise), request.steps, generator=generator, eta=eta,  # type: ignore[arg-type]
                          guidance=guidance, guidance_scale=w if do_guidance else None,
                          init_sample=None if init_sample is None else pair(init_sample), start_index=start_index,
                          constrain=together):
        step = kept.pop()
        yield replace(record, sample=composed_view(record.sample), model_input=composed_view(record.model_input),
                      model_output=composed_view(record.model_output),
                      pred_original_sample=composed_view(record.pred_original_sample),
                      prev_sample=composed_view(record.prev_sample),
                      noise_pred_uncond=composed_view(record.noise_pred_uncond),
                      noise_pred_text=composed_view(record.noise_pred_text),
                      guidance_scale=record.guidance_scale if record.noise_pred_uncond is not None else None,
                      layout=step)


def attend_and_excite(model: Any, prompts: Sequence[str], text: torch.Tensor, latent_size: int, steps: int,
                      log: list[ExciteStep]) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """The Attend-and-Excite ``refine`` hook for these prompts (:mod:`diffusion.excite`): their object words
    (the shapes world's nouns) are excited; ``text`` (B, L, D) are the prompts' embeddings."""
    autocast_dtype = getattr(model, "autocast_dtype", None)
    subjects, ends = [], []
    for prompt in prompts:
        tokens = token_labels(model, prompt)
        subjects.append(subject_indices(tokens))
        ends.append(len(tokens) - 1)
    states = text.clone()  # outside inference mode: a tensor autograd may save

    def conditional(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with unet_precision(model.device, autocast_dtype):
            return model.unet(z, t, encoder_hidden_states=states).sample

    return make_refiner(conditional, latent_size, subjects, ends, ExciteConfig.for_steps(steps), steps, log)


def decode_latents(model: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, h, w) -> images (B, 3, H, W) in [-1, 1] through the VAE decoder."""
    with torch.inference_mode():
        return model.vae.decode(latents.float() / model.scaling_factor).sample.clamp(-1, 1)


def pictures(model: Any, x: torch.Tensor) -> np.ndarray:
    """Model space -> uint8 pictures (B, H, W) or (B, H, W, 3): pixel models' x in [-1, 1] directly,
    latent models' scaled latents through the VAE decoder."""
    if getattr(model, "vae", None) is not None:
        x = decode_latents(model, x)
    return to_uint8(x)


def image_size(model: Any) -> int:
    """The model's native image size in pixels, read off the loaded weights' configs."""
    size = model.unet.config.sample_size
    size = size if isinstance(size, int) else int(size[0])
    return size * (model.vae_scale_factor if getattr(model, "vae", None) is not None else 1)


def encode_image(model: Any, image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3/4) -> x_0 (1, C, h, w) in model space.

    Centre-cropped to a square and resized to the model's resolution; grayscale for one-channel
    models. Latent models encode it (the posterior's mode, times the scaling factor).
    """
    latent = getattr(model, "vae", None) is not None
    pixels = prepare_image(image, image_size(model), 3 if latent or model.unet.config.in_channels != 1 else 1)
    if latent:
        with torch.inference_mode():
            dist = model.vae.encode(pixels.to(model.device, torch.float32)).latent_dist
            return (dist.mode() * model.scaling_factor).to(model.dtype)
    return pixels.to(model.device, model.dtype)
