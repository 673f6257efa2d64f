"""The app-facing API of the model module: plain values in, numpy arrays and records out.

``demo/`` (which never imports torch) and the CLI call this. Every request builds its own
scheduler and generator, so concurrent requests share nothing but the read-only weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from diffusion.loading import LatentTextModel, LoadedModel, ModelStore, PixelModel
from diffusion.loop import StepRecord
from diffusion.pipeline import (
    PromptTokens,
    SampleRequest,
    check_request,
    decode_latents,
    latent_steps,
    make_grid,
    pixel_steps,
    read_prompt,
    to_uint8,
)
from diffusion.registry import ModelCard, Registry
from diffusion.schedulers import make_scheduler

logger = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_PROMPT_CHARS = 2000


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


@dataclass
class Trajectory:
    model_id: str
    request: SampleRequest
    steps: list[StepView] = field(default_factory=list)
    final: np.ndarray | None = None
    wall_s: float = 0.0


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


class Studio:
    """Registry + model store + the sampling entry points the app and CLI use."""

    def __init__(self, registry: Registry | None = None, device: str = "auto", max_batch: int = MAX_BATCH):
        self.registry = registry or Registry.default()
        self.store = ModelStore(self.registry, device)
        self.max_batch = max_batch

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
    def _steps(self, model: LoadedModel, request: SampleRequest) -> Iterator[StepRecord]:
        if isinstance(model, PixelModel):
            return pixel_steps(model.unet, model.scheduler_config, request)
        return latent_steps(model, request)

    def _decode(self, model: LoadedModel, x0: torch.Tensor) -> np.ndarray:
        if isinstance(model, LatentTextModel):
            x0 = decode_latents(model, x0)
        return to_uint8(x0)

    def generate(self, model_id: str, request: SampleRequest, previews: int = 20) -> Iterator[Progress]:
        """Sample ``request.n`` images: one update per step, then the result.

        About ``previews`` of the updates carry a decoded preview of the predicted x0 (``preview``
        is None on the others, so progress bars cost no decoding); ``previews=0`` decodes none.
        """
        self.validate(model_id, request)
        model = self.load(model_id)
        check_request(request, model.scheduler_config, self.max_batch)
        prompt = _read_prompt(model, request.prompt)
        every = max(1, request.steps // previews) if previews > 0 else 0
        start = time.perf_counter()
        last: StepRecord | None = None
        for record in self._steps(model, request):
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
    def trajectory(self, model_id: str, request: SampleRequest) -> Iterator[tuple[int, int, Trajectory]]:
        """Run the reverse process for one image, recording a :class:`StepView` per step.

        Yields ``(done, total, trajectory)`` as it goes (the trajectory grows in place); memory
        is bounded by keeping only uint8 pictures of one image.
        """
        request = SampleRequest(**{**request.__dict__, "n": 1})
        self.validate(model_id, request)
        model = self.load(model_id)
        check_request(request, model.scheduler_config, self.max_batch)
        scheduler = make_scheduler(request.sampler, model.scheduler_config)
        alphas_cumprod = scheduler.alphas_cumprod.numpy()
        betas = scheduler.betas.numpy()
        traj = Trajectory(model_id, request)
        start = time.perf_counter()
        latent = isinstance(model, LatentTextModel)
        for record in self._steps(model, request):
            t = int(round(record.timestep))
            x_t_range = (-3.0, 3.0) if latent else (-1.0, 1.0)
            traj.steps.append(StepView(
                index=record.index, timestep=record.timestep,
                alpha_prod_t=float(alphas_cumprod[t]), beta_t=float(betas[t]),
                x_t=_to_display(record.model_input, *x_t_range)[0],
                noise=_to_display(record.model_output, -3.0, 3.0)[0],
                pred_x0=self._decode(model, record.pred_original_sample)[0],
            ))
            if len(traj.steps) > 1:
                traj.steps[-2].alpha_prod_t_prev = traj.steps[-1].alpha_prod_t
            traj.wall_s = time.perf_counter() - start
            if record.is_last:
                traj.final = self._decode(model, record.prev_sample)[0]
            yield record.index + 1, record.num_steps, traj

    def schedule(self, model_id: str) -> ScheduleCurves:
        """The model's training noise schedule (reads the scheduler config; loads the model)."""
        model = self.load(model_id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        return ScheduleCurves(
            timesteps=np.arange(len(scheduler.betas)),
            betas=scheduler.betas.numpy().astype(np.float64),
            alphas_cumprod=scheduler.alphas_cumprod.numpy().astype(np.float64),
        )

    def read_prompt(self, model_id: str, prompt: str) -> PromptTokens | None:
        return _read_prompt(self.load(model_id), prompt)


def _read_prompt(model: LoadedModel, prompt: str) -> PromptTokens | None:
    """How a text model's tokenizer reads ``prompt`` (None for pixel models)."""
    if not isinstance(model, LatentTextModel):
        return None
    with model.tokenizer_lock:
        return read_prompt(model.tokenizer, prompt)
