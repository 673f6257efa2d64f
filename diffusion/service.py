"""The app-facing API of the model module: plain values in, numpy arrays and records out.

``demo/`` (which never imports torch) and the CLI call this. Every request builds its own
scheduler and generator, so concurrent requests share nothing but the read-only weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from diffusion.attention import AttentionMaps
from diffusion.loading import LatentTextModel, LoadedModel, ModelStore, PixelModel, Speedups
from diffusion.loop import StepRecord, predict_original_sample, predicted_noise
from diffusion.pipeline import (
    PromptTokens,
    SampleRequest,
    check_request,
    decode_latents,
    latent_steps,
    make_generator,
    make_grid,
    pixel_steps,
    read_prompt,
    sample_noise,
    to_uint8,
)
from diffusion.registry import ModelCard, Registry
from diffusion.runtime import MODEL_RUNS, ComputeGate
from diffusion.schedulers import make_scheduler, max_steps_for

logger = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_PROMPT_CHARS = 2000
MAX_TRAJECTORY_IMAGES = 16  # the step lab records at most this many images per run


@dataclass
class Progress:
    """One streamed update of a sampling run.

    ``preview`` is a uint8 grid of the current predicted x0 (H, W) or (H, W, 3); on the last
    update ``images`` holds the final uint8 images (N, H, W) or (N, H, W, 3) and ``grid`` their
    tiling. ``model_calls`` counts UNet forward passes (one batched call per step).
    """

    step: int
    num_steps: int
    timestep: float
    preview: np.ndarray | None
    wall_s: float
    model_calls: int
    images: np.ndarray | None = None
    grid: np.ndarray | None = None
    prompt: PromptTokens | None = None

    @property
    def done(self) -> bool:
        return self.images is not None


@dataclass
class StepView:
    """One step of the step-by-step view for a single image, as uint8 pictures and numbers.

    Pictures are (H, W) or (H, W, 3): x_t (the variance-preserving x_t, clipped to [-1, 1]),
    the predicted noise (mapped from [-3, 3]) and the predicted x0 (clipped to [-1, 1]).
    For latent models x_t and the noise are the first three latent channels, and x0 is decoded.
    """

    index: int
    timestep: float
    alpha_prod_t: float
    beta_t: float
    x_t: np.ndarray
    noise: np.ndarray
    pred_x0: np.ndarray
    alpha_prod_t_prev: float = 1.0  # alpha-bar of the step this one lands on (1 after the last)
    guidance: GuidancePair | None = None  # text models with guidance: the step's two predictions
    latents: np.ndarray | None = None  # latent models: x_t's channels side by side, uint8 (h, C * (w + 1) - 1)
    # text models: cross-attention per prompt token, float16 (L, h, w) at the latent's size, for
    # "all" layers and per layer resolution ("8x8", ...); L = the prompt's tokens with start and
    # end, then one map for all padding tokens together (at each position the L maps sum to 1)
    attention: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class GuidancePair:
    """One image's cached classifier-free-guidance inputs at one step, float16 (C, h, w).

    ``model_input`` is the variance-preserving x_t the UNet saw; ``uncond`` and ``text`` its
    unconditional and conditional predictions. Enough to recompute the guided prediction and
    the predicted x0 for any guidance scale without calling the model again.
    """

    model_input: np.ndarray
    uncond: np.ndarray
    text: np.ndarray
    guidance_scale: float


@dataclass(frozen=True)
class GuidanceView:
    """The guidance decomposition at one step (uint8 pictures; x0 decoded for each scale)."""

    uncond: np.ndarray
    text: np.ndarray
    direction: np.ndarray  # eps_text - eps_uncond, mapped from [-1, 1]
    scales: tuple[float, ...]
    pred_x0: tuple[np.ndarray, ...]
    direction_norm: float  # RMS of the guidance direction


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


@dataclass
class Trajectory:
    model_id: str
    request: SampleRequest
    steps: list[StepView] = field(default_factory=list)
    final: np.ndarray | None = None
    wall_s: float = 0.0
    tokens: list[str] | None = None  # text models: labels of the attention maps (start, words, end, padding)
    attention_layers: dict[str, int] | None = None  # cross-attention layers per resolution ("8x8": 2, ...)


def attention_summary(maps: AttentionMaps, kept: int) -> dict[str, np.ndarray]:
    """One image's maps (first of the batch) as float16 (kept + 1, h, w) for "all" layers and each
    resolution: the first ``kept`` tokens, then the sum over the remaining (padding) tokens."""
    def fold(m: torch.Tensor) -> np.ndarray:
        m = m[0]
        parts = [m[:kept], m[kept:].sum(dim=0, keepdim=True)] if kept < m.shape[0] else [m]
        return torch.cat(parts).numpy().astype(np.float16)

    out = {"all": fold(maps.mean())}
    out.update({f"{r}x{r}": fold(m) for r, m in maps.by_resolution.items()})
    return out


def attention_overlays(view: StepView, tokens: Sequence[str], layers: str = "all",
                       alpha: float = 0.6) -> list[tuple[np.ndarray, str]]:
    """The step's cross-attention of each token over its predicted x0: uint8 (H, W, 3) and a label.

    Each map is upsampled (bilinear) to the image, scaled to its own maximum and drawn with the
    "cividis" colour map (readable with colour-blindness, unlike "jet"); the label gives the token's
    share of all attention at this step (the mean of its map over positions; the shares of all
    tokens, padding included, sum to 100%).
    """
    from matplotlib import colormaps

    if view.attention is None or layers not in view.attention:
        raise ValueError(f"no cross-attention maps for layers {layers!r} at this step")
    maps = torch.from_numpy(view.attention[layers].astype(np.float32))
    base = view.pred_x0 if view.pred_x0.ndim == 3 else np.repeat(view.pred_x0[..., None], 3, axis=-1)
    size = base.shape[:2]
    up = torch.nn.functional.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    colour = colormaps["cividis"]
    out = []
    for token, share, m in zip(tokens, maps.mean(dim=(1, 2)).tolist(), up, strict=True):
        heat = colour((m / m.max().clamp_min(1e-8)).numpy())[..., :3] * 255
        img = (alpha * heat + (1 - alpha) * base.astype(np.float32)).round().clip(0, 255).astype(np.uint8)
        out.append((img, f"{token} · {share:.0%}"))
    return out


@dataclass(frozen=True)
class ScheduleCurves:
    """The model's noise schedule over training timesteps t = 0..T-1 (Ho et al. 2020, Eq. 4)."""

    timesteps: np.ndarray
    betas: np.ndarray
    alphas_cumprod: np.ndarray  # alpha-bar_t

    @property
    def log_snr(self) -> np.ndarray:
        """log SNR(t) = log(alpha-bar_t / (1 - alpha-bar_t)) (Kingma et al. 2021)."""
        return np.log(self.alphas_cumprod) - np.log1p(-self.alphas_cumprod)


def _to_display(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(B, C, H, W) float -> uint8 (B, H, W) or (B, H, W, 3), mapping [lo, hi] to [0, 255]."""
    x = x.float()
    if x.shape[1] > 3:  # latents: show the first three channels as RGB
        x = x[:, :3]
    scaled = (x - lo) / (hi - lo) * 2 - 1
    return to_uint8(scaled)


DEFAULT_RACE: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 50), ("dpmpp-2m", 20), ("euler", 30))


@dataclass
class RaceLane:
    """One sampler's run in the race: per step, the noise level and the predicted x0 (uint8).

    ``alpha_prod`` holds alpha-bar at each step's input x_t (for Euler: 1 / (1 + sigma^2), the same
    quantity), so lanes with different step counts can be compared at equal noise levels.
    """

    sampler: str
    steps: int
    alpha_prod: list[float] = field(default_factory=list)
    pred_x0: list[np.ndarray] = field(default_factory=list)
    model_calls: int = 0
    wall_s: float = 0.0
    final: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.final is not None


def race_milestones(lanes: Sequence[RaceLane], parts: int = 20) -> tuple[int, ...]:
    """How far each lane has come, in ``parts`` equal parts: the race is worth redrawing when this changes
    (about every 5% of a lane, and at every lane's end)."""
    return tuple(lane.model_calls * parts // max(1, lane.steps) for lane in lanes)


def align_by_noise(lanes: list[RaceLane], levels: np.ndarray) -> list[list[int | None]]:
    """For each lane and each target alpha-bar, the index of the step with the nearest noise level
    in log-SNR (None where the lane has not reached any step yet)."""
    out = []
    target = np.log(levels) - np.log1p(-levels)
    for lane in lanes:
        if not lane.alpha_prod:
            out.append([None] * len(levels))
            continue
        ab = np.clip(np.asarray(lane.alpha_prod), 1e-12, 1 - 1e-12)
        snr = np.log(ab) - np.log1p(-ab)
        out.append([int(np.argmin(np.abs(snr - v))) for v in target])
    return out


RACE_LEVELS = np.array([0.002, 0.02, 0.1, 0.3, 0.6, 0.85, 0.97, 0.995])  # alpha-bar targets, noisy -> clean


def race_grid(lanes: list[RaceLane], levels: np.ndarray = RACE_LEVELS, pad: int = 2) -> np.ndarray:
    """uint8 grid: one row per lane, one column per noise level (predicted x0 at the nearest step);
    light gray where a lane has not got there yet."""
    sample = next((lane.pred_x0[0] for lane in lanes if lane.pred_x0), None)
    if sample is None:
        raise ValueError("no lane has a step yet")
    tiles = []
    for lane, picks in zip(lanes, align_by_noise(lanes, levels), strict=True):
        for level, index in zip(levels, picks, strict=True):
            reached = index is not None and (lane.done or lane.alpha_prod[index] >= level
                                             or abs(lane.alpha_prod[index] - level) < 0.02)
            tiles.append(lane.pred_x0[index] if reached else np.full_like(sample, 220))
    return make_grid(np.stack(tiles), ncols=len(levels), pad=pad)


class Studio:
    """Registry + model store + the sampling entry points the app and CLI use."""

    def __init__(self, registry: Registry | None = None, device: str = "auto", max_batch: int = MAX_BATCH,
                 precision: str = "auto", speedups: Speedups = Speedups()):
        """``precision``: "auto" (bf16 autocast for the UNet on CPUs with native bf16), "fp32" or "bf16";
        ``speedups``: optional channels_last / torch.compile for the UNets."""
        self.registry = registry or Registry.default()
        self.store = ModelStore(self.registry, device, precision, speedups)
        self.max_batch = max_batch
        self.gate = ComputeGate(MODEL_RUNS)  # every denoising step of every request passes it

    # ----- model cards -------------------------------------------------------------------
    def cards(self, kind: str | None = None) -> list[ModelCard]:
        cards = list(self.registry.cards.values())
        return [c for c in cards if kind is None or c.kind == kind]

    def card(self, model_id: str) -> ModelCard:
        return self.registry.get(model_id)

    def load(self, model_id: str) -> LoadedModel:
        return self.store.get(model_id)

    # ----- validation --------------------------------------------------------------------
    def validate(self, model_id: str, request: SampleRequest) -> ModelCard:
        """Raise ``ValueError`` (readable) before any model work when a request is invalid."""
        try:
            card = self.registry.get(model_id)
        except KeyError as error:  # the registry's message names the available ids
            raise ValueError(error.args[0]) from None
        if len(request.prompt) > MAX_PROMPT_CHARS or len(request.negative_prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompts are limited to {MAX_PROMPT_CHARS} characters")
        if card.kind == "pixel" and (request.prompt or request.negative_prompt):
            raise ValueError(f"{model_id} is unconditional: it takes no prompt")
        return card

    # ----- sampling ----------------------------------------------------------------------
    def _steps(self, model: LoadedModel, request: SampleRequest, init_sample: torch.Tensor | None = None,
               start_index: int = 0, record_attention: bool = False) -> Iterator[StepRecord]:
        """The loop's records for ``request``, one step at a time through the compute gate: a
        consumer that stops asking (a cancelled request) stops the work within one step."""
        if isinstance(model, PixelModel):
            records = pixel_steps(model.unet, model.scheduler_config, request, init_sample, start_index,
                                  model.autocast_dtype)
        else:
            records = latent_steps(model, request, init_sample=init_sample, start_index=start_index,
                                   record_attention=record_attention)
        return self.gate.steps(records)

    # ----- images in model space (forward-process lab, SDEdit) -----------------------------
    def encode_image(self, model: LoadedModel, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) or (H, W, 3/4) -> x_0 (1, C, h, w) in model space.

        Centre-cropped to a square and resized to the model's resolution; grayscale for
        one-channel models. Latent models encode it (posterior mode, times the scaling factor).
        """
        pixels = prepare_image(image, _resolution(model), 1 if _channels(model) == 1 else 3)
        if isinstance(model, LatentTextModel):
            with torch.inference_mode():
                dist = model.vae.encode(pixels.to(model.device, torch.float32)).latent_dist
                return (dist.mode() * model.scaling_factor).to(model.dtype)
        return pixels.to(model.device, model.dtype)

    def start_index(self, model: LoadedModel, request: SampleRequest, timestep: int) -> int:
        """The first step of a ``request.steps`` run at or below training timestep ``timestep``."""
        scheduler = make_scheduler(request.sampler, model.scheduler_config)
        scheduler.set_timesteps(request.steps)
        below = [i for i, t in enumerate(scheduler.timesteps.tolist()) if t <= timestep]
        return below[0] if below else len(scheduler.timesteps) - 1

    def forward(self, model_id: str, image: np.ndarray, timestep: int, seed: int = 0) -> ForwardView:
        """The forward process on the user's image: x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps (Eq. 4)."""
        model = self.load(model_id)
        limit = max_steps_for(model.scheduler_config)
        if not 0 <= int(timestep) < limit:
            raise ValueError(f"t must be between 0 and {limit - 1}, got {timestep}")
        x0 = self.encode_image(model, image)
        noise = sample_noise(tuple(x0.shape), make_generator(seed), x0.device, x0.dtype)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        t = torch.tensor([int(timestep)])
        x_t = scheduler.add_noise(x0, noise, t)  # q_sample
        ab = float(scheduler.alphas_cumprod[int(timestep)])
        latents = psnr = None
        if isinstance(model, LatentTextModel):
            latents = latent_channels(x_t[0])
            recon = decode_latents(model, x0)
            target = prepare_image(image, _resolution(model), 3)
            psnr = float(10 * torch.log10(4.0 / ((recon.cpu() - target) ** 2).mean().clamp_min(1e-12)))
        return ForwardView(int(timestep), ab, ab**0.5, (1 - ab) ** 0.5, self._decode(model, x0)[0],
                           self._decode(model, x_t.clamp(-1, 1) if isinstance(model, PixelModel) else x_t)[0],
                           float(x_t.float().std()), float(x0.float().std()), latents, psnr)

    def forward_strip(self, model_id: str, image: np.ndarray, timesteps: Sequence[int], seed: int = 0) -> np.ndarray:
        """x_t of one image at several t, as uint8 images (len(timesteps), H, W[, 3]): the image is
        encoded once and noised with the same single draw as :meth:`forward` uses for ``seed``."""
        model = self.load(model_id)
        limit = max_steps_for(model.scheduler_config)
        if not all(0 <= int(t) < limit for t in timesteps):
            raise ValueError(f"t must be between 0 and {limit - 1}, got {list(timesteps)}")
        x0 = self.encode_image(model, image)
        noise = sample_noise(tuple(x0.shape), make_generator(seed), x0.device, x0.dtype)
        n = len(timesteps)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        x_t = scheduler.add_noise(x0.expand(n, -1, -1, -1), noise.expand(n, -1, -1, -1),
                                  torch.tensor([int(t) for t in timesteps]))  # q_sample
        return self._decode(model, x_t.clamp(-1, 1) if isinstance(model, PixelModel) else x_t)

    def _decode(self, model: LoadedModel, x0: torch.Tensor) -> np.ndarray:
        if isinstance(model, LatentTextModel):
            x0 = decode_latents(model, x0)
        return to_uint8(x0)

    def generate(self, model_id: str, request: SampleRequest, previews: int = 20,
                 init_image: np.ndarray | None = None, start_timestep: int | None = None) -> Iterator[Progress]:
        """Sample ``request.n`` images: one update per step, then the result.

        About ``previews`` of the updates carry a decoded preview of the predicted x0 (``preview``
        is None on the others, so progress bars cost no decoding); ``previews=0`` decodes none.
        With ``init_image`` (uint8) the run starts from that image noised to ``start_timestep``
        (SDEdit, Meng et al. 2022): small t keeps the content, large t invents new content.
        """
        self.validate(model_id, request)
        model = self.load(model_id)
        check_request(request, model.scheduler_config, self.max_batch)
        prompt = _read_prompt(model, request.prompt)
        init, start_index = None, 0
        if init_image is not None:
            init = self.encode_image(model, init_image).repeat(request.n, 1, 1, 1)
            start_index = self.start_index(model, request, int(start_timestep if start_timestep is not None else 0))
        every = max(1, request.steps // previews) if previews > 0 else 0
        start = time.perf_counter()
        last: StepRecord | None = None
        for record in self._steps(model, request, init, start_index):
            last = record
            if not torch.isfinite(record.prev_sample).all():
                raise FloatingPointError(
                    f"{model_id} produced NaN/inf values at step {record.index + 1}; no image was returned")
            if not record.is_last:
                show = every > 0 and record.index % every == 0
                preview = make_grid(self._decode(model, record.pred_original_sample)) if show else None
                yield Progress(record.index + 1, record.num_steps, record.timestep, preview,
                               time.perf_counter() - start, record.index + 1, prompt=prompt)
        assert last is not None
        images = self._decode(model, last.prev_sample)
        yield Progress(last.num_steps, last.num_steps, last.timestep, None, time.perf_counter() - start,
                       last.num_steps, images=images, grid=make_grid(images), prompt=prompt)

    def sample(self, model_id: str, request: SampleRequest) -> np.ndarray:
        """Final uint8 images only (N, H, W) or (N, H, W, 3)."""
        *_, final = self.generate(model_id, request, previews=0)
        assert final.images is not None
        return final.images

    # ----- the step-by-step view ---------------------------------------------------------
    def trajectory(self, model_id: str, request: SampleRequest,
                   images: int = 1) -> Iterator[tuple[int, int, Trajectory]]:
        """Run the reverse process for ``images`` images (1..16; ``request.n`` is ignored),
        recording a :class:`StepView` per step.

        Yields ``(done, total, trajectory)`` as it goes (the trajectory grows in place). Memory
        is bounded by keeping only uint8 pictures (for several images, grids of them), and for
        text models the first image's float16 guidance pair and latent channels, and (one-image
        runs) float16 cross-attention maps at the latent's size for the prompt's tokens.
        """
        if not 1 <= int(images) <= MAX_TRAJECTORY_IMAGES:
            raise ValueError(f"the step lab records 1 to {MAX_TRAJECTORY_IMAGES} images, got {images}")
        request = SampleRequest(**{**request.__dict__, "n": int(images)})
        self.validate(model_id, request)
        model = self.load(model_id)
        check_request(request, model.scheduler_config, self.max_batch)
        scheduler = make_scheduler(request.sampler, model.scheduler_config)
        alphas_cumprod = scheduler.alphas_cumprod.numpy()
        betas = scheduler.betas.numpy()
        traj = Trajectory(model_id, request)
        start = time.perf_counter()
        latent = isinstance(model, LatentTextModel)
        record_attention = latent and model.cross_attention_layers > 0 and images == 1
        if record_attention:
            traj.tokens = prompt_token_labels(model, request.prompt)
            kept = len(traj.tokens)
            if kept < model.tokenizer.model_max_length:  # prompts are padded to this length (encode_prompt)
                traj.tokens.append("padding")
        for record in self._steps(model, request, record_attention=record_attention):
            t = int(round(record.timestep))
            x_t_range = (-3.0, 3.0) if latent else (-1.0, 1.0)
            traj.steps.append(StepView(
                index=record.index, timestep=record.timestep,
                alpha_prod_t=float(alphas_cumprod[t]), beta_t=float(betas[t]),
                x_t=_tile(_to_display(record.model_input, *x_t_range)),
                noise=_tile(_to_display(predicted_noise(scheduler, record.model_input, record.model_output, t),
                                        -3.0, 3.0)),
                pred_x0=_tile(self._decode(model, record.pred_original_sample)),
                guidance=None if record.noise_pred_uncond is None else GuidancePair(
                    model_input=_half(record.model_input[0]), uncond=_half(record.noise_pred_uncond[0]),
                    text=_half(record.noise_pred_text[0]), guidance_scale=float(record.guidance_scale or 1.0)),
                latents=latent_channels(record.model_input[0]) if latent else None,
                attention=None if record.cross_attention is None else attention_summary(record.cross_attention, kept),
            ))
            if record.cross_attention is not None and traj.attention_layers is None:
                traj.attention_layers = {f"{r}x{r}": n for r, n in record.cross_attention.layers.items()}
            if len(traj.steps) > 1:
                traj.steps[-2].alpha_prod_t_prev = traj.steps[-1].alpha_prod_t
            traj.wall_s = time.perf_counter() - start
            if record.is_last:
                traj.final = _tile(self._decode(model, record.prev_sample))
            yield record.index + 1, record.num_steps, traj

    def race(self, model_id: str, request: SampleRequest,
             lanes: tuple[tuple[str, int], ...] = DEFAULT_RACE) -> Iterator[list[RaceLane]]:
        """One seed, several samplers: run them cheapest first and yield the lanes as they grow.

        Yields after every step of every lane (the UI redraws about every 5% of a lane:
        :func:`race_milestones`; DDPM-1000 streams while the others are already shown).
        Memory: one uint8 image per step per lane.
        """
        request = SampleRequest(**{**request.__dict__, "n": 1})
        self.validate(model_id, request)
        model = self.load(model_id)
        limit = max_steps_for(model.scheduler_config)  # "DDPM 1000" means all of a model's timesteps
        state = [RaceLane(sampler, min(steps, limit)) for sampler, steps in lanes]
        for lane in state:
            check_request(SampleRequest(**{**request.__dict__, "sampler": lane.sampler, "steps": lane.steps}),
                          model.scheduler_config, self.max_batch)
        alphas_cumprod = make_scheduler("ddpm", model.scheduler_config).alphas_cumprod.numpy()
        for lane in sorted(state, key=lambda x: x.steps):
            lane_request = SampleRequest(**{**request.__dict__, "sampler": lane.sampler, "steps": lane.steps})
            start = time.perf_counter()
            for record in self._steps(model, lane_request):
                lane.alpha_prod.append(float(alphas_cumprod[int(round(record.timestep))]))
                lane.pred_x0.append(self._decode(model, record.pred_original_sample)[0])
                lane.model_calls += 1
                lane.wall_s = time.perf_counter() - start
                if record.is_last:
                    lane.final = self._decode(model, record.prev_sample)[0]
                yield state  # every step: a consumer that stops asking stops the race within one step

    def guidance_view(self, model_id: str, view: StepView,
                      scales: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 7.0, 10.0)) -> GuidanceView:
        """Classifier-free guidance at one recorded step, from its one cached pair of predictions.

        eps_w = eps_uncond + w (eps_text - eps_uncond) (Ho & Salimans 2022, Eq. 6) and the
        predicted x0 for each w (DDPM Eq. 15), decoded; w = 0 is unconditional, w = 1 conditional.
        """
        if view.guidance is None:
            raise ValueError("this step has no guidance record: use a text model with guidance > 1")
        model = self.load(model_id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        pair = view.guidance
        x = torch.from_numpy(pair.model_input.astype(np.float32))[None]
        uncond = torch.from_numpy(pair.uncond.astype(np.float32))[None]
        text = torch.from_numpy(pair.text.astype(np.float32))[None]
        direction = text - uncond
        t = int(round(view.timestep))
        guided = torch.cat([uncond + w * direction for w in scales])
        x0 = predict_original_sample(scheduler, x.repeat(len(scales), 1, 1, 1), guided, t)
        # show noise predictions whatever the model predicts (v-prediction: eps = sqrt(1-ab) x + sqrt(ab) v)
        uncond, text = (predicted_noise(scheduler, x, out, t) for out in (uncond, text))
        direction = text - uncond
        decoded = self._decode(model, x0.to(model.device, model.dtype))
        return GuidanceView(
            uncond=_to_display(uncond, -3.0, 3.0)[0], text=_to_display(text, -3.0, 3.0)[0],
            direction=_to_display(direction, -1.0, 1.0)[0], scales=tuple(scales),
            pred_x0=tuple(decoded), direction_norm=float(direction.pow(2).mean().sqrt()))

    def schedule(self, model_id: str) -> ScheduleCurves:
        """The model's training noise schedule (reads the scheduler config; loads the model)."""
        model = self.load(model_id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        return ScheduleCurves(
            timesteps=np.arange(len(scheduler.betas)),
            betas=scheduler.betas.numpy().astype(np.float64),
            alphas_cumprod=scheduler.alphas_cumprod.numpy().astype(np.float64),
        )

    @staticmethod
    def schedule_family(num_train_timesteps: int = 1000) -> dict[str, ScheduleCurves]:
        """The three classic schedules for comparison: DDPM's linear (Ho et al. 2020), Stable
        Diffusion's scaled-linear and the cosine schedule (Nichol & Dhariwal 2021, Eq. 17)."""
        from diffusers import DDPMScheduler

        configs = {"linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
                   "scaled-linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                   "cosine": {"beta_schedule": "squaredcos_cap_v2"}}
        out = {}
        for name, config in configs.items():
            scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, **config)
            out[name] = ScheduleCurves(np.arange(num_train_timesteps), scheduler.betas.numpy().astype(np.float64),
                                       scheduler.alphas_cumprod.numpy().astype(np.float64))
        return out

    def read_prompt(self, model_id: str, prompt: str) -> PromptTokens | None:
        return _read_prompt(self.load(model_id), prompt)


def _tile(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, 3]) -> the one image for N = 1, else a grid of them."""
    return images[0] if len(images) == 1 else make_grid(images)


def trajectory_nbytes(traj: Trajectory) -> int:
    """Bytes of the arrays a trajectory keeps (its pictures, guidance pairs and attention maps)."""
    total = 0 if traj.final is None else traj.final.nbytes
    for view in traj.steps:
        total += view.x_t.nbytes + view.noise.nbytes + view.pred_x0.nbytes
        total += 0 if view.latents is None else view.latents.nbytes
        if view.guidance is not None:
            total += view.guidance.model_input.nbytes + view.guidance.uncond.nbytes + view.guidance.text.nbytes
        total += sum(a.nbytes for a in (view.attention or {}).values())
    return total


def _half(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float16)


def _resolution(model: LoadedModel) -> int:
    """The model's native image size in pixels, read off the loaded weights' configs."""
    size = model.unet.config.sample_size
    size = size if isinstance(size, int) else int(size[0])
    return size * (model.vae_scale_factor if isinstance(model, LatentTextModel) else 1)


def _channels(model: LoadedModel) -> int:
    return 3 if isinstance(model, LatentTextModel) else int(model.unet.config.in_channels)


def prepare_image(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) -> (1, channels, size, size) float in [-1, 1].

    Centre-cropped to a square, resized with Pillow's bicubic filter, alpha dropped, converted
    to grayscale for one-channel models.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"expected an image (H, W) or (H, W, C), got shape {arr.shape}")
    pil = Image.fromarray(arr.astype(np.uint8))
    w, h = pil.size
    side = min(w, h)
    pil = pil.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    pil = pil.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 127.5 - 1)
    return (x[None, None] if channels == 1 else x.permute(2, 0, 1)[None]).contiguous()


def latent_channels(latent: torch.Tensor, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    """(C, h, w) latents -> uint8 (h, C * (w + 1) - 1): each channel as a grayscale image, side by side."""
    x = ((latent.float().cpu().clamp(lo, hi) - lo) / (hi - lo) * 255).round().to(torch.uint8).numpy()
    c, h, w = x.shape
    out = np.full((h, c * (w + 1) - 1), 255, np.uint8)
    for i in range(c):
        out[:, i * (w + 1): i * (w + 1) + w] = x[i]
    return out


def prompt_token_labels(model: LatentTextModel, prompt: str) -> list[str]:
    """The tokens the text encoder sees for ``prompt``, start and end included, truncated as encoded."""
    tokenizer = model.tokenizer
    with model.tokenizer_lock:
        ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
        tokens = tokenizer.convert_ids_to_tokens(ids)
    return [tok.removesuffix("</w>") for tok in tokens]


def _read_prompt(model: LoadedModel, prompt: str) -> PromptTokens | None:
    """How a text model's tokenizer reads ``prompt`` (None for pixel models)."""
    if not isinstance(model, LatentTextModel):
        return None
    with model.tokenizer_lock:
        return read_prompt(model.tokenizer, prompt)
