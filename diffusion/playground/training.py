"""Algorithm 1 of Ho et al. 2020, live: train the point denoiser on a 2-D cloud, a few steps at a time.

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, ..., T});  eps ~ N(0, I)
        gradient step on || eps - eps_theta( sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t ) ||^2
    until converged

The noisy input is the scheduler's own ``add_noise`` (DDPM Eq. 4), so training and sampling share one
schedule. :func:`train_points` is a generator: it yields a :class:`TrainUpdate` every ``chunk`` steps
(the app streams the loss curve from it, and the fair runner interleaves other users' work between
chunks), every few hundred steps a fresh sample cloud, and at a few steps a measured one (its distance to
the data) with a snapshot of the weights. Every random number (the data set, the weights' initialisation, batches,
t and eps) comes from CPU generators seeded by the config: the same :class:`PointConfig` gives the same
weights, bit for bit, on the same CPU and library versions; its JSON is the recipe that replays it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

from diffusion.data.points import (
    DATASETS,
    PointSet,
    check_word,
    drawing_set,
    point_set,
)
from diffusion.metrics.points import sliced_wasserstein
from diffusion.playground.model import PointDenoiser
from diffusion.playground.views import particle_steps
from diffusion.request import MAX_SEED, real_number, whole_number

FORMAT = "diffusion-classroom/point-recipe@1"
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # our name -> diffusers' beta_schedule
TIMESTEP_CHOICES = (50, 100, 250, 500, 1000)
MAX_TRAIN_STEPS = 20_000
MAX_POINTS = 4096  # particles a user may sample at once
TRAIN_POINTS = 4096  # the fixed training set
EVAL_POINTS = 2000  # the sample cloud and the fresh data each measure uses
PREVIEW_POINTS, PREVIEW_STEPS = 1000, 20  # the quick unmeasured look during training
EVAL_STEPS = 100  # DDPM steps of the preview clouds (seeded: the distance is a function of the weights)


@dataclass(frozen=True)
class PointConfig:
    """Everything that determines a playground training run (its recipe).

    ``dataset``: a key of :data:`DATASETS`; ``word``: the text of the "word" set; ``drawing``: the
    "drawing" set's ink mask, packed (:func:`pack_mask`); ``schedule``: "linear" (DDPM's betas from
    1e-4 to 0.02, rescaled by 1000 / T so that every T ends at the same noise) or "cosine" (Nichol &
    Dhariwal 2021); ``num_train_timesteps``: T; ``steps``: optimiser steps (Adam, cosine-decayed learning
    rate); ``seed``: the data set, initial weights and every batch.
    """

    dataset: str = "moons"
    word: str = ""
    drawing: str = ""
    schedule: str = "cosine"
    num_train_timesteps: int = 1000
    steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 2e-3
    hidden: int = 128
    layers: int = 3
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "config": asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> PointConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"the recipe is not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("config"), dict):
            raise ValueError(f"not a playground recipe (expected format {FORMAT!r})")
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(data["config"]) - set(known)
        if unknown:
            raise ValueError(f"unknown recipe keys: {', '.join(sorted(unknown))}")
        return check_config(cls(**data["config"]))

    def point_set(self) -> PointSet:
        if self.dataset == "drawing":
            if not self.drawing:
                raise ValueError("draw something on the sketchpad first (or choose another data set)")
            return drawing_set(unpack_mask(self.drawing))
        return point_set(self.dataset, self.word)


def pack_mask(mask: np.ndarray) -> str:
    """A bool (H, W) mask as text: "H,W," + base64 of its packed bits (a 128 x 128 drawing: 2.7 kB)."""
    h, w = mask.shape
    return f"{h},{w}," + base64.b64encode(np.packbits(mask.astype(bool))).decode()


def unpack_mask(text: str) -> np.ndarray:
    try:
        h, w, payload = text.split(",", 2)
        height, width = int(h), int(w)
        if not (0 < height <= 512 and 0 < width <= 512):
            raise ValueError
        bits = np.unpackbits(np.frombuffer(base64.b64decode(payload, validate=True), np.uint8))
        return bits[: height * width].reshape(height, width).astype(bool)
    except ValueError:
        raise ValueError("the drawing in the recipe is not a packed mask (H,W,base64)") from None


def check_config(config: PointConfig) -> PointConfig:
    """Every bound of a training run, checked once; form values normalised (300.0 -> 300)."""
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown data set {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
    if not isinstance(config.word, str) or not isinstance(config.drawing, str) or len(config.drawing) > 60_000:
        raise ValueError("word and drawing must be text (a drawing at most 60,000 characters)")
    checked = replace(
        config,
        word=check_word(config.word) if config.dataset == "word" else "",
        drawing=config.drawing if config.dataset == "drawing" else "",
        num_train_timesteps=whole_number(config.num_train_timesteps, "T (training timesteps)", 10, 1000),
        steps=whole_number(config.steps, "Training steps", 1, MAX_TRAIN_STEPS),
        batch_size=whole_number(config.batch_size, "Batch size", 1, 1024),
        learning_rate=real_number(config.learning_rate, "learning rate", 1e-5, 0.1),
        hidden=whole_number(config.hidden, "Hidden width", 8, 256),
        layers=whole_number(config.layers, "Hidden layers", 1, 6),
        seed=whole_number(config.seed, "Seed", 0, MAX_SEED),
    )
    if checked.dataset == "drawing":
        if not checked.drawing:
            raise ValueError("draw something on the sketchpad first (or choose another data set)")
        unpack_mask(checked.drawing)
    return checked


def scheduler_config(config: PointConfig) -> dict[str, Any]:
    """The DDPM scheduler config of a run: T, the schedule, epsilon prediction, no clipping (points are
    unbounded, unlike pixels)."""
    scale = 1000 / config.num_train_timesteps  # DDPM's linear betas are for T = 1000
    return dict(DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=SCHEDULES[config.schedule],
                              beta_start=1e-4 * scale, beta_end=min(0.02 * scale, 0.999), clip_sample=False,
                              prediction_type="epsilon").config)


@dataclass(frozen=True)
class Snapshot:
    """The weights after ``step`` optimiser steps (safetensors bytes), their sample cloud and its distance to fresh data."""

    step: int
    weights: bytes = field(repr=False)
    distance: float
    cloud: np.ndarray = field(repr=False)  # (EVAL_POINTS, 2), the measured sample


@dataclass(frozen=True)
class PointModel:
    """A trained playground model, as plain values: the config, the final weights (safetensors bytes), the
    snapshots taken during training, the loss of every step, and the measured distance and floor."""

    config: PointConfig
    weights: bytes = field(repr=False)
    snapshots: tuple[Snapshot, ...]
    losses: tuple[float, ...] = field(repr=False)
    distance: float
    floor: float
    train_s: float

    @property
    def nbytes(self) -> int:
        return len(self.weights) + sum(len(s.weights) + s.cloud.nbytes for s in self.snapshots) + 8 * len(self.losses)


@dataclass
class TrainUpdate:
    """One streamed update: ``step`` of ``total`` done, the loss of every step so far; on preview steps a
    sample cloud (EVAL_POINTS, 2) with its distance to fresh data; ``model`` on the last update."""

    step: int
    total: int
    losses: list[float]
    wall_s: float  # since the start, measuring included
    measure_s: float = 0.0  # of which spent sampling and measuring clouds (the rest is Algorithm 1)
    samples: np.ndarray | None = None
    distance: float | None = None
    model: PointModel | None = None


def make_denoiser(config: PointConfig, weights: bytes | None = None) -> PointDenoiser:
    """The run's network: fresh weights from the config's seed, or the given safetensors bytes."""
    model = PointDenoiser(hidden=config.hidden, layers=config.layers)
    if weights is None:
        model.reset_parameters(torch.Generator().manual_seed(config.seed))
    else:
        model.load_state_dict(load_weights(weights))
    return model.eval()


def training_data(config: PointConfig) -> torch.Tensor:
    """The fixed training set (TRAIN_POINTS, 2) of a run, drawn with its seed."""
    return config.point_set().sample(TRAIN_POINTS, torch.Generator().manual_seed(config.seed))


def fresh_data(config: PointConfig, n: int = EVAL_POINTS, draw: int = 1) -> np.ndarray:
    """A fresh sample of the run's distribution (not the training set): draw 1, 2, ... are independent."""
    return config.point_set().sample(n, torch.Generator().manual_seed(config.seed + 7919 * draw)).numpy()


def noise_floor(config: PointConfig) -> float:
    """The distance between two fresh samples of the data (EVAL_POINTS each): the best a model can score."""
    return sliced_wasserstein(fresh_data(config, draw=1), fresh_data(config, draw=2))


def sample_cloud(model: PointDenoiser, sched_config: dict, n: int, seed: int, sampler: str = "ddpm",
                 steps: int = EVAL_STEPS) -> np.ndarray:
    """The preview and measuring cloud (n, 2): DDPM (Algorithm 2) with EVAL_STEPS of the T steps, through
    the one loop, seeded (the distance is a function of the weights)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=g)  # x_T ~ N(0, I)
    *_, last = particle_steps(model, sched_config, sampler, steps, noise, g)
    return last.prev_sample.float().numpy()


def train_points(config: PointConfig, chunk: int = 25, preview_every: int = 250, measure_every: int = 1000,
                 snapshots: tuple[int, ...] = (100, 300, 1000)) -> Iterator[TrainUpdate]:
    """Train a :class:`PointDenoiser` on ``config`` (checked), yielding every ``chunk`` steps.

    At the steps in ``snapshots``, every ``measure_every`` steps and at the end a sample cloud
    (:func:`sample_cloud`) is drawn and measured, and at the snapshots and the end the weights are kept with
    their cloud, for "under- against well-trained". Every ``preview_every`` steps in between a quicker,
    unmeasured cloud is drawn (PREVIEW_POINTS points, DDIM PREVIEW_STEPS steps), so the class sees it learn.
    """
    config = check_config(config)
    began = time.perf_counter()
    model = make_denoiser(config).train()
    sched_config = scheduler_config(config)
    scheduler = DDPMScheduler.from_config(sched_config)
    data = training_data(config)
    fresh = fresh_data(config)
    g = torch.Generator().manual_seed(config.seed + 1)  # batches, t and eps
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(100, config.steps // 10),
                                                  num_training_steps=config.steps)
    T = config.num_train_timesteps
    losses: list[float] = []
    kept: list[Snapshot] = []

    measuring = [0.0]

    def measure(step: int) -> tuple[np.ndarray, float, bytes]:
        began_measure = time.perf_counter()
        model.eval()
        cloud = sample_cloud(model, sched_config, EVAL_POINTS, config.seed)
        model.train()
        result = cloud, sliced_wasserstein(cloud, fresh), save_weights(
            {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})
        measuring[0] += time.perf_counter() - began_measure
        return result

    for step in range(1, config.steps + 1):
        x_0 = data[torch.randint(0, len(data), (config.batch_size,), generator=g)]  # x_0 ~ q(x_0)
        t = torch.randint(0, T, (config.batch_size,), generator=g)  # t ~ Uniform({1..T}) (0-based here)
        eps = torch.randn(x_0.shape, generator=g)  # eps ~ N(0, I)
        x_t = scheduler.add_noise(x_0, eps, t)  # sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, Eq. 4
        loss = torch.nn.functional.mse_loss(model(x_t, t), eps)  # the simple objective, Eq. 14
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        losses.append(float(loss.detach()))
        last = step == config.steps
        if last:
            cloud, distance, weights = measure(step)
            kept.append(Snapshot(step, weights, distance, cloud))
            result = PointModel(config, weights, tuple(kept), tuple(losses), distance, noise_floor(config),
                                time.perf_counter() - began)
            yield TrainUpdate(step, config.steps, losses, result.train_s, measuring[0], cloud, distance, result)
        elif step in snapshots or step % measure_every == 0:
            cloud, distance, weights = measure(step)
            if step in snapshots:
                kept.append(Snapshot(step, weights, distance, cloud))
            yield TrainUpdate(step, config.steps, losses, time.perf_counter() - began, measuring[0], cloud, distance)
        elif step % preview_every == 0:  # a quick look, not measured: 1,000 points, DDIM 20 steps
            began_preview = time.perf_counter()
            model.eval()
            cloud = sample_cloud(model, sched_config, PREVIEW_POINTS, config.seed, "ddim", PREVIEW_STEPS)
            model.train()
            measuring[0] += time.perf_counter() - began_preview
            yield TrainUpdate(step, config.steps, losses, time.perf_counter() - began, measuring[0], cloud)
        elif step % chunk == 0:
            yield TrainUpdate(step, config.steps, losses, time.perf_counter() - began, measuring[0])


def save_folder(model: PointModel, root: Path) -> Path:
    """A trained model as a diffusers folder: ``denoiser/`` (config.json + safetensors, loads with
    ``PointDenoiser.from_pretrained``), ``scheduler/`` (``DDPMScheduler.from_pretrained``), ``recipe.json``
    (replays the training: ``python -m diffusion.training.train_points --recipe``) and ``metrics.json``."""
    root = Path(root)
    make_denoiser(model.config, model.weights).save_pretrained(root / "denoiser", safe_serialization=True)
    DDPMScheduler.from_config(scheduler_config(model.config)).save_pretrained(root / "scheduler")
    (root / "recipe.json").write_text(model.config.to_json())
    (root / "metrics.json").write_text(json.dumps(
        {"sliced_wasserstein": model.distance, "floor": model.floor, "train_s": round(model.train_s, 2),
         "steps": model.config.steps, "final_loss_mean_100": float(np.mean(model.losses[-100:]))}, indent=2))
    return root
