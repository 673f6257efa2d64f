"""The lessons' own views of the shipped models, reached through the Studio (``studio.lessons``).

Ho et al.'s Figs. 6 and 7 live, the denoising error against t, memorisation, and Rombach et al.'s cost of a step
and trade by downsampling factor. Each view checks its request and loads its model when called (``ValueError``,
readable); the streamed ones then run their steps through the Studio's compute gate, and the one-shot ones
return their computation as a stream of one item (:func:`diffusion.later.later`). Marked as model work
(:func:`diffusion.remote.model_work`), they run on the replicas where the Studio has a backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from diffusion.data.mnist import HELD_OUT_SHEET, TRAINING_SHEET, read_sheet
from diffusion.lab.compression import Compression
from diffusion.lab.cost import StepCost, check_factor, step_cost
from diffusion.lab.denoising import DenoisingError, denoising_error
from diffusion.lab.memorisation import NearestCopies, nearest_copies
from diffusion.lab.progressive import Progressive, progressive
from diffusion.lab.shared import SharedLatent, start_indices
from diffusion.lab.trajectory import GUIDANCE_SCALES, GuidanceView, Trajectory
from diffusion.later import later
from diffusion.metrics.cards import RESULTS_FILE
from diffusion.pipeline import pictures
from diffusion.registry import ASSETS
from diffusion.remote import Backend, model_work
from diffusion.request import MAX_SEED, SampleRequest, whole_number
from diffusion.schedulers import make_scheduler

if TYPE_CHECKING:
    from diffusion.studio import Run, Studio


def gate_figures(model_id: str = "ldm-shapes") -> dict[str, float]:
    """The figures the shipped model's gate wrote (``assets/<model>/gate_results.json``, by
    ``python -m diffusion.metrics.shapes_gate --write``), flattened: "single.exact", "pairs.both",
    "pairs_layout_off.relation", "sweep.4.exact", "layout_cost.ratio", ... Empty when the file is missing. What
    lessons and cards quote about a shipped model comes from here, never typed by hand."""
    path = ASSETS / model_id / RESULTS_FILE
    if not path.is_file():
        return {}
    out: dict[str, float] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)

    walk("", json.loads(path.read_text(encoding="utf-8")))
    return out


class LessonViews:
    """The lessons' views, on the Studio's models, checks and gate."""

    def __init__(self, studio: Studio):
        self.studio = studio

    @property
    def backend(self) -> Backend | None:
        return self.studio.backend

    @model_work(stream=True, name="lessons.progressive")
    def progressive(self, model_id: str, request: SampleRequest,
                    points: int = 8) -> Iterator[tuple[int, int, Progressive | None]]:
        """Ho et al. 2020, Fig. 6, live: the predicted x0 of ``request.n`` images at ``points`` evenly spaced steps
        (:mod:`diffusion.lab.progressive`); yields (steps done, steps, None) as it runs, then the pictures."""
        count = whole_number(points, "Points", 2, 20)
        run = self.studio.prepare(model_id, request)
        return progressive(self.studio.run_steps(run), lambda x: pictures(run.model, x), count)

    @model_work(stream=True, name="lessons.shared_latent")
    def shared_latent(self, model_id: str, request: SampleRequest,
                      samples: int = 3) -> Iterator[tuple[int, int, SharedLatent | None]]:
        """Ho et al. 2020, Fig. 7, live (:mod:`diffusion.lab.shared`): one DDPM run of ``request`` (its steps and
        seed; one image), continued ``samples`` times from its x_t at each of :data:`STARTS` with fresh noise (seed
        + 1, + 2, ...). Yields (steps done, steps, None) as it runs, then the pictures. Pixel models only."""
        card = self.studio.card(model_id)
        if card.kind != "pixel":
            raise ValueError("the shared-x_t figure is drawn for pixel models (choose a DDPM)")
        count = whole_number(samples, "Samples", 1, 8)
        run = self.studio.prepare(card.id, replace(request, sampler="ddpm", n=1))
        branches = [self.studio.prepare(card.id, replace(run.request, n=count,
                                                          seed=(run.request.seed + 1 + k) % (MAX_SEED + 1)))
                    for k in range(len(start_indices(run.request.steps)))]
        return self._shared_latent(run, branches)

    def _shared_latent(self, run: Run, branches: list[Run]) -> Iterator[tuple[int, int, SharedLatent | None]]:
        """:meth:`shared_latent`'s runs: ``run``, then each branch from its start."""
        starts = start_indices(run.request.steps)
        total = run.request.steps + sum(run.request.steps - i for i in starts)
        kept, done, timesteps = {}, 0, []
        for record in self.studio.run_steps(run):
            if record.index in starts:
                kept[record.index] = record.sample.clone()
                timesteps.append(record.timestep)
            done += 1
            if record.is_last:
                original = pictures(run.model, record.prev_sample)[0]
            yield done, total, None
        shown, finals = [], []
        for branch, index in zip(branches, starts, strict=True):
            count = branch.request.n
            for record in self.studio.run_steps(branch, start=index, start_sample=kept[index].repeat(count, 1, 1, 1)):
                done += 1
                if not record.is_last:
                    yield done, total, None
            shown.append(pictures(run.model, kept[index])[0])
            finals.append(pictures(run.model, record.prev_sample))
        yield total, total, SharedLatent(np.stack(shown), np.stack(finals), original, tuple(timesteps))

    @model_work(stream=True, name="lessons.denoising_error")
    def denoising_error(self, model_id: str, images: Sequence[np.ndarray] | None = None, points: int = 20,
                        shown: Sequence[int] = (50, 250, 500, 750, 950), seed: int = 0) -> Iterator[DenoisingError]:
        """A pixel model's noise-prediction error at ``points`` evenly spaced t on held-out images (default: the
        64 held-out MNIST digits shipped in assets/examples), with its x_t, predicted noise and predicted x_0
        at the t in ``shown`` (:mod:`diffusion.lab.denoising`): a stream of one item (:func:`diffusion.later.later`),
        checked and loaded when called."""
        card = self.studio.card(model_id)
        if card.kind != "pixel":
            raise ValueError("the denoising-error view is for pixel models (choose a DDPM)")
        model = self.studio.load(card.id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        T = len(scheduler.alphas_cumprod)
        ts = [int(t) for t in np.linspace(0, T - 1, whole_number(points, "Points", 2, 100)).round()]
        ts = sorted(set(ts) | {int(t) for t in shown if 0 <= int(t) < T})
        digits = list(images) if images is not None else read_sheet(ASSETS / "examples" / HELD_OUT_SHEET)
        if not 1 <= len(digits) <= 256:
            raise ValueError(f"the denoising error is measured on 1 to 256 images, got {len(digits)}")
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        return later(lambda: denoising_error(model, scheduler, digits, ts, list(shown), seed))

    @staticmethod
    def nearest_copies(samples: np.ndarray) -> NearestCopies:
        """Memorisation: each digit sample (n, 32, 32) uint8 beside its nearest of the 4,000 training digits, with
        the 64 shipped held-out digits' own distances as the yardstick (:mod:`diffusion.lab.memorisation`)."""
        samples = np.asarray(samples)
        if samples.dtype != np.uint8 or samples.ndim != 3 or samples.shape[1:] != (32, 32) or not 1 <= len(samples) <= 256:
            raise ValueError(f"memorisation compares 1 to 256 uint8 digits of 32x32, got {samples.dtype} {samples.shape}")
        train = np.stack(read_sheet(ASSETS / "examples" / TRAINING_SHEET))
        held_out = np.stack(read_sheet(ASSETS / "examples" / HELD_OUT_SHEET))
        return nearest_copies(samples, train, held_out)

    @model_work(stream=True, name="lessons.guided_run")
    def guided_run(self, model_id: str, request: SampleRequest,
                   scales: tuple[float, ...] = GUIDANCE_SCALES) -> Iterator[tuple[int, int, Trajectory] | GuidanceView]:
        """Lesson 8: a text model's run with guidance recorded step by step (the step lab's
        :meth:`~diffusion.studio.Studio.trajectory`; yields (steps done, steps, trajectory) as it runs), then the
        guidance decomposition at each of ``scales`` (:meth:`~diffusion.studio.Studio.guidance_view`) of its step
        :meth:`guided_step`. Checked and loaded when called."""
        card = self.studio.card(model_id)
        if card.kind != "latent-text":  # before the run loads a model it cannot use
            raise ValueError("the guidance view needs a text model and guidance above 1")
        run = self.studio.trajectory(card.id, request)  # checks the request: its guidance is a number after this
        if not float(request.guidance_scale) > 1:
            raise ValueError("the guidance view needs a text model and guidance above 1")

        def work() -> Iterator[tuple[int, int, Trajectory] | GuidanceView]:
            for done, total, traj in run:
                yield done, total, traj
            yield next(self.studio.guidance_view(card.id, traj.steps[self.guided_step(total)], scales))

        return work()

    @staticmethod
    def guided_step(steps: int) -> int:
        """The step (0-based) of a run of ``steps`` whose guidance :meth:`guided_run` decomposes: a third of the way
        in, early enough that guidance still shapes the image."""
        return steps // 3

    @model_work(stream=True, name="lessons.step_cost")
    def step_cost(self, model_id: str, in_pixels: bool = False) -> Iterator[StepCost]:
        """FLOPs and measured time of one UNet step for one image of ``model_id``; ``in_pixels``: of the same UNet
        architecture denoising the decoded image instead of the latent (:mod:`diffusion.lab.cost`): a stream of one
        item, checked and loaded when called."""
        model = self.studio.load(model_id)
        if in_pixels:
            check_factor(model, 1)
        return later(lambda: step_cost(model, factor=1 if in_pixels else None))

    @model_work(stream=True, name="lessons.compression")
    def compression(self, model_id: str, image: np.ndarray, repeats: int = 3) -> Iterator[Compression]:
        """Rombach et al.'s trade by downsampling factor for one uint8 RGB image (H, W, 3), resized (bicubic) to the
        latent model ``model_id``'s image size (:meth:`diffusion.lab.compression.Autoencoders.compare`; the f = 1
        row's reconstruction is the resized image itself): a stream of one item, checked and loaded when called."""
        card = self.studio.card(model_id)
        if card.kind != "latent-text":
            raise ValueError(f"{card.id} has no autoencoder (choose a latent model)")
        model = self.studio.load(card.id)
        self.studio.autoencoders.load_all()
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
        side = model.unet.config.sample_size * model.vae_scale_factor
        image = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
        return later(lambda: self.studio.autoencoders.compare(model, image, repeats))
