"""A request ready to run (:class:`Run`) and a sampling run's streamed updates (:class:`Progress`,
:func:`sampling_updates`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.images import make_grid
from diffusion.lab.forward import start_index
from diffusion.loading import LoadedModel
from diffusion.loop import StepRecord
from diffusion.pipeline import encode_image, pictures
from diffusion.prompts import PromptTokens, model_reads
from diffusion.registry import ModelCard
from diffusion.request import SampleRequest


@dataclass
class Progress:
    """One streamed update of a sampling run.

    ``preview`` is a uint8 grid of the current predicted x0 (H, W) or (H, W, 3); on the last
    update ``images`` holds the final uint8 images (N, H, W) or (N, H, W, 3) and ``grid`` their
    tiling. ``model_calls`` counts UNet forward passes (one batched call per step); ``request`` is
    the checked request (form values normalised).
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
    request: SampleRequest | None = None
    cached: bool = False  # the stored result of an identical earlier request (no model call)

    @property
    def done(self) -> bool:
        return self.images is not None


@dataclass(frozen=True)
class Run:
    """A request ready to run: the model's card, the loaded model, the checked request, and the run's
    own fresh scheduler (built once, here; schedulers keep per-run state and are not shared)."""

    card: ModelCard
    model: LoadedModel
    request: SampleRequest
    scheduler: SchedulerMixin

    @property
    def text(self) -> bool:
        return self.card.kind == "latent-text"


def sampling_updates(run: Run, previews: int, steps: Callable[[torch.Tensor | None, int], Iterator[StepRecord]],
                     init_image: np.ndarray | None = None, start_timestep: int | None = None) -> Iterator[Progress]:
    """A sampling run of the checked ``run``: one update per step, about ``previews`` of them with a decoded preview
    of the predicted x0, then the images. ``steps(init, start)`` gives the loop's records (through the compute
    gate); with ``init_image`` (uint8) the run starts from it noised to the checked ``start_timestep`` (SDEdit,
    Meng et al. 2022). A NaN or inf is an error, never an image."""
    model, request = run.model, run.request
    prompt = model_reads(model, request.prompt) if run.text else None
    init, start = None, 0
    if init_image is not None:
        init = encode_image(model, init_image).repeat(request.n, 1, 1, 1)
        start = start_index(run.scheduler, request.steps, int(start_timestep or 0))
    every = max(1, request.steps // previews) if previews > 0 else 0
    began = time.perf_counter()
    last: StepRecord | None = None
    for record in steps(init, start):
        last = record
        if not torch.isfinite(record.prev_sample).all():
            raise FloatingPointError(
                f"{run.card.id} produced NaN/inf values at step {record.index + 1}; no image was returned")
        if not record.is_last:
            show = every > 0 and record.index % every == 0
            preview = make_grid(pictures(model, record.pred_original_sample)) if show else None
            yield Progress(record.index + 1, record.num_steps, record.timestep, preview,
                           time.perf_counter() - began, record.index + 1, prompt=prompt, request=request)
    assert last is not None
    images = pictures(model, last.prev_sample)
    yield Progress(last.num_steps, last.num_steps, last.timestep, None, time.perf_counter() - began,
                   last.num_steps, images=images, grid=make_grid(images), prompt=prompt, request=request)
