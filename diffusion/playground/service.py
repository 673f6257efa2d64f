"""The playground's entry points, reached through the Studio (``studio.playground``), in plain values.

Training and sampling are generators that advance one chunk (training) or one denoising step (sampling)
at a time through the Studio's compute gate, each carrying its progress for the fair runner, so a class
training 30 playgrounds shares the CPU with the image models step by step, and a cancelled run stops
within one chunk. A trained model travels as a :class:`PointModel` (config + safetensors bytes): the UI
keeps it in the user's session; nothing is global.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from diffusion.data.points import drawing_mask, mask_sampler
from diffusion.playground.training import (
    EVAL_POINTS,
    MAX_POINTS,
    PointConfig,
    PointModel,
    TrainUpdate,
    check_config,
    fresh_data,
    make_denoiser,
    pack_mask,
    save_folder,
    scheduler_config,
    train_points,
    training_data,
)
from diffusion.playground.views import (
    NoiseField,
    ParticlePaths,
    ParticleRun,
    forward_process,
    loss_by_t,
    noise_field,
    particle_paths,
    particle_steps,
)
from diffusion.later import later
from diffusion.loop import StepGate, record_progress
from diffusion.request import MAX_SEED, real_number, whole_number
from diffusion.schedulers import SAMPLERS

logger = logging.getLogger(__name__)

MAX_PATHS = 32
MAX_GRID = 41
# Samplers offered here: Euler's sigma-space start (sigma_max = sqrt((1 - alpha_bar_T) / alpha_bar_T), about 6e4 on
# the cosine schedule) amplifies the small network's error at x_T: measured SW_2 2.4 on two moons against DDPM's 0.05
SAMPLERS_HERE = ("ddpm", "ddim", "dpmpp-2m")


@dataclass
class SampleProgress:
    """A sampling run in progress: ``done`` of ``total`` steps; ``run`` once it is finished."""

    done: int
    total: int
    run: ParticleRun | None = None


class Playground:
    """Train, sample and inspect point models; every step passes ``gate``."""

    def __init__(self, gate: StepGate):
        self.gate = gate

    def config(self, **values: object) -> PointConfig:
        """A checked config from form values (``ValueError`` naming the bad one)."""
        try:
            return check_config(PointConfig(**values))  # type: ignore[arg-type]
        except TypeError as error:
            raise ValueError(f"unknown training setting: {error}") from None

    def drawing(self, image: np.ndarray) -> str:
        """A sketch (uint8 image) as the packed ink mask a :class:`PointConfig` carries (``ValueError`` when it
        has too little ink)."""
        mask = drawing_mask(image)
        mask_sampler(mask)  # refuses a drawing with too few inked pixels, before any training
        return pack_mask(mask)

    def train(self, config: PointConfig) -> Iterator[TrainUpdate]:
        """Algorithm 1 on ``config``: an update every 25 steps, a measured sample cloud at steps 100, 300, every
        1000 and at the end (the last update carries the :class:`PointModel`)."""
        config = check_config(config)
        updates = train_points(config)
        yield from self.gate.steps(updates, progress=lambda update: (update.step, update.total))

    def data(self, config: PointConfig, n: int = EVAL_POINTS) -> np.ndarray:
        """The first ``n`` points of the run's training set (n, 2)."""
        return training_data(check_config(config))[:n].numpy()

    def fresh(self, model: PointModel) -> np.ndarray:
        """Fresh data (EVAL_POINTS, 2), the cloud the distances are measured against."""
        return fresh_data(model.config)

    def _request(self, model: PointModel, sampler: object, steps: object, n: object, seed: object,
                 eta: object) -> tuple[str, int, int, int, float]:
        if sampler not in SAMPLERS_HERE:
            raise ValueError(f"the playground samples with {', '.join(SAMPLERS_HERE)}; got {sampler!r}")
        T = model.config.num_train_timesteps
        return (str(sampler), whole_number(steps, "Steps", 1, T), whole_number(n, "Particles", 1, MAX_POINTS),
                whole_number(seed, "Seed", 0, MAX_SEED), real_number(eta, "eta", 0.0, 1.0))

    def sample(self, model: PointModel, sampler: str = "ddpm", steps: int = 100, n: int = 1000, seed: int = 0,
               eta: float = 0.0) -> Iterator[SampleProgress]:
        """The reverse process of ``n`` particles through the one loop, one step at a time; the last
        update carries the :class:`ParticleRun` (x_t at every step, pred x0, timesteps). The request is checked
        when this is called (``ValueError``); the iterator only runs the model."""
        return self._sample(model, *self._request(model, sampler, steps, n, seed, eta))  # checked when called

    def _sample(self, model: PointModel, sampler: str, steps: int, n: int, seed: int,
                eta: float) -> Iterator[SampleProgress]:
        """:meth:`sample`'s run, of a checked request."""
        net = make_denoiser(model.config, model.weights)
        sched_config = scheduler_config(model.config)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, 2, generator=g)  # x_T ~ N(0, I)
        records = particle_steps(net, sched_config, sampler, steps, noise, g,
                                 eta=eta if SAMPLERS[sampler].uses_eta else None)
        began = time.perf_counter()
        x_t, pred_x0, ts = [], [], []
        for record in self.gate.steps(records, progress=record_progress):
            if not x_t:
                x_t.append(record.sample.float().numpy())
            x_t.append(record.prev_sample.float().numpy())
            pred_x0.append(record.pred_original_sample.float().numpy())
            ts.append(record.timestep)
            if not record.is_last:
                yield SampleProgress(record.index + 1, record.num_steps)
        run = ParticleRun(sampler, np.stack(x_t), np.stack(pred_x0), np.array(ts, np.float32),
                          time.perf_counter() - began)
        if not np.isfinite(run.x_t[-1]).all():
            raise FloatingPointError(f"{sampler} produced NaN/inf particles with this model; try another sampler")
        yield SampleProgress(len(ts), len(ts), run)

    def forward(self, config: PointConfig, timesteps: list[int] | None = None, n: int = 1000,
                seed: int = 0) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """The run's data under the forward process at ``timesteps`` (default: 0 and five more up to T - 1):
        (timesteps, alpha-bar at each, clouds (len, n, 2)), one noise draw. Needs no trained model. A stream of
        one item (:func:`diffusion.later.later`), checked when called."""
        config = check_config(config)
        T = config.num_train_timesteps
        ts = timesteps if timesteps is not None else [int(t) for t in np.linspace(0, T - 1, 6).round()]
        ts = [whole_number(t, "t", 0, T - 1) for t in ts]
        n, seed = whole_number(n, "Particles", 1, MAX_POINTS), whole_number(seed, "Seed", 0, MAX_SEED)

        def noised() -> tuple[list[int], np.ndarray, np.ndarray]:
            data = self.data(config, n)
            sched_config = scheduler_config(config)
            alpha_bar = DDPMScheduler.from_config(sched_config).alphas_cumprod.numpy()[ts]
            return ts, alpha_bar, forward_process(data, sched_config, ts, seed)

        return later(noised)

    def alpha_bar(self, config: PointConfig) -> np.ndarray:
        """The schedule's alpha-bar_t for t = 0 .. T - 1."""
        return DDPMScheduler.from_config(scheduler_config(check_config(config))).alphas_cumprod.numpy()

    def field(self, model: PointModel, timestep: object, grid: object = 21) -> Iterator[NoiseField]:
        """eps_theta and the score on a grid at ``timestep`` (:func:`diffusion.playground.views.noise_field`): a
        stream of one item, checked when called."""
        t = whole_number(timestep, "t", 0, model.config.num_train_timesteps - 1)
        side = whole_number(grid, "Grid", 5, MAX_GRID)
        return later(lambda: noise_field(make_denoiser(model.config, model.weights), scheduler_config(model.config),
                                         t, side))

    def paths(self, model: PointModel, k: object = 8, seed: object = 0,
              steps: object = 50) -> Iterator[ParticlePaths]:
        """``k`` particles, one start, DDPM (two noise seeds) against DDIM: a stream of one item, checked when
        called."""
        k = whole_number(k, "Particles", 1, MAX_PATHS)
        steps = whole_number(steps, "Steps", 2, model.config.num_train_timesteps)
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        return later(lambda: particle_paths(make_denoiser(model.config, model.weights), scheduler_config(model.config),
                                            k, seed, steps))

    def loss_by_t(self, model: PointModel, bins: int = 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The trained model's loss against t on fresh data: a stream of one item."""
        return later(lambda: loss_by_t(make_denoiser(model.config, model.weights), scheduler_config(model.config),
                                       fresh_data(model.config, draw=3), bins, seed=model.config.seed))

    def export(self, model: PointModel, folder: Path) -> Path:
        """The model as a zipped diffusers folder (:func:`diffusion.playground.training.save_folder`) in
        ``folder``; returns the zip's path."""
        root = save_folder(model, Path(folder) / "point-model")
        return Path(shutil.make_archive(str(root), "zip", root_dir=root))
