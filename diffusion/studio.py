"""The Studio: the one door into the model module, in plain values.

``demo/`` (which never imports torch) and the CLI call the Studio with ids, seeds, prompts and
uint8 arrays, and get numpy pictures and small records back. Every request is checked once
(:meth:`Studio.prepare`: the model's card, the loaded model, the checked request and the run's one
fresh scheduler), and every denoising step of every request passes the compute gate, so concurrent
requests share nothing but the read-only weights and a cancelled one stops within a step.

The work itself lives in one module per concept: the loop (:mod:`diffusion.loop`), sampling with
loaded components (:mod:`diffusion.pipeline`), the step lab's views (:mod:`diffusion.lab`), each
step's update in numbers (:mod:`diffusion.explain`) and recipes (:mod:`diffusion.recipe`). The
plain value types and helpers the UI needs are re-exported here (``__all__``), so the UI imports
this module and nothing else from ``diffusion``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from diffusion import __version__
from diffusion.budget import DEFAULT_STATE_BYTES, DEFAULT_STATE_TTL_S, StateBudget
from diffusion.cache import DEFAULT_CACHE_BYTES, Flights, ResultCache, shared_run
from diffusion.data.points import DATASETS as POINT_DATASETS, MAX_WORD_CHARS
from diffusion.data.shapes import HELD_OUT_PAIRS
from diffusion.explain import update_latex
from diffusion.export import PANELS, ExportDir, trajectory_frames, write_animation
from diffusion.images import IMAGE_LIMITS, data_url_bytes, make_grid, read_image
from diffusion.lab.compression import FIGURE_URL as COMPRESSION_FIGURE, Autoencoders, Compression, FactorRow
from diffusion.lab.denoising import DenoisingError
from diffusion.lab.forward import ForwardView, forward_process, forward_strip
from diffusion.lab.memorisation import NearestCopies
from diffusion.lab.progressive import FIGURE_URL as PROGRESSIVE_FIGURE, Progressive
from diffusion.lab.race import DEFAULT_RACE, RACE_LEVELS, RaceLane, labelled_race_grid, race_milestones, run_race
from diffusion.lab.schedules import ScheduleCurves, schedule_family
from diffusion.lab.shared import FIGURE_URL as SHARED_LATENT_FIGURE, SharedLatent
from diffusion.lab.trajectory import (GUIDANCE_SCALES, GuidanceView, StepView, Trajectory, UpdatePictures,
                                      attention_overlays, decompose_guidance, record_run, trajectory_nbytes)
from diffusion.later import later
from diffusion.layout import LAYOUT_MODES, Layout, why_plain
from diffusion.lessons import LessonViews, gate_figures
from diffusion.loading import (PRECISIONS, LoadedModel, ModelLoadError, ModelStore, Speedups, precision_name,
                               weights_digest)
from diffusion.loop import StepRecord, record_progress
from diffusion.pipeline import latent_steps, pictures, pixel_steps, request_layouts
from diffusion.planner.pictures import CELL as PLAN_CELL
from diffusion.planner.service import LAYOUT_TITLES, MAX_PLANS, PLANNER_SAMPLERS, PlannerDesk, PlanProgress, PlanRun
from diffusion.playground.pictures import cloud_picture, run_frames
from diffusion.playground.service import MAX_PATHS, SAMPLERS_HERE, Playground, SampleProgress
from diffusion.playground.training import (MAX_POINTS, MAX_TRAIN_STEPS, TIMESTEP_CHOICES, PointConfig, PointModel,
                                           TrainUpdate)
from diffusion.playground.views import EXTENT, NoiseField, ParticlePaths, ParticleRun
from diffusion.prompts import PromptTokens, model_reads
from diffusion.recipe import MAX_RECIPE_CHARS, Recipe, recipe_from_link
from diffusion.registry import ASSETS, ModelCard, ModelKind, Registry
from diffusion.remote import Backend, BackendError, model_work
from diffusion.runs import Progress, Run, sampling_updates
from diffusion.request import (MAX_BATCH, MAX_LAB_IMAGES, MAX_SEED, MAX_STEPS, MAX_TEXT_BATCH, MAX_PROMPT_CHARS,
                               SampleRequest, check_request, whole_number)
from diffusion.runners import Cancelled, FairRunner, Relay, Runner, in_turn
from diffusion.work_budget import check_work_budget
from diffusion.schedulers import SAMPLERS, make_scheduler, max_steps_for
from diffusion.threads import configure_threads

logger = logging.getLogger(__name__)

__all__ = [  # what the UI may use: the Studio and plain values
    "__version__", "ASSETS", "MAX_RECIPE_CHARS", "GUIDANCE_SCALES", "IMAGE_LIMITS", "MAX_LAB_IMAGES",
    "MAX_SEED", "MAX_STEPS", "MAX_TEXT_BATCH", "PANELS", "RACE_LEVELS",
    "SAMPLERS", "ExportDir", "Runner", "Relay", "Cancelled", "in_turn", "ModelCard", "ModelLoadError", "Progress",
    "PromptTokens", "RaceLane", "ForwardView", "GuidanceView", "DenoisingError", "Recipe", "SampleRequest", "ScheduleCurves", "StateBudget", "StepView", "UpdatePictures",
    "Progressive", "PROGRESSIVE_FIGURE", "SharedLatent", "SHARED_LATENT_FIGURE",
    "BackendError", "Studio", "Trajectory", "attention_overlays", "data_url_bytes", "make_grid", "labelled_race_grid", 
    "race_milestones",
    "read_image", "trajectory_frames", "trajectory_nbytes", "update_latex", "whole_number", "write_animation",
    # the playground (studio.playground)
    "EXTENT", "MAX_PATHS", "MAX_POINTS", "MAX_TRAIN_STEPS", "MAX_WORD_CHARS", "POINT_DATASETS",
    "SAMPLERS_HERE", "TIMESTEP_CHOICES", "SampleProgress", "TrainUpdate", "NoiseField", "ParticlePaths", "ParticleRun", "PointConfig", "PointModel",
    "cloud_picture", "run_frames",
    # the planner (studio.planner)
    "LAYOUT_TITLES", "MAX_PLANS", "PLAN_CELL", "PLANNER_SAMPLERS", "PlanProgress", "PlanRun",
    # the lessons' own views
    "HELD_OUT_PAIRS", "NearestCopies", "gate_figures", "Compression", "FactorRow",
    "COMPRESSION_FIGURE",
    # composition by layout (the text tab, the step lab, lesson 10)
    "LAYOUT_MODES", "Layout",
    # starting the app (demo/launch.py)
    "DEFAULT_CACHE_BYTES", "DEFAULT_STATE_BYTES", "DEFAULT_STATE_TTL_S", "PRECISIONS", "Registry", "Speedups",
    "configure_threads", "ray_backend",
]


def ray_backend():  # noqa: ANN201 - a module
    """The optional Ray Serve backend (:mod:`diffusion.ray_backend`: ``RayOptions``, ``ray_studio``,
    ``StudioSettings``); ``ImportError`` where ``ray[serve]`` is not installed (``pip install -e ".[scale]"``)."""
    from diffusion import ray_backend as backend

    return backend


class Studio:
    """Registry + model store + every entry point the app and the CLI use."""

    def __init__(self, registry: Registry | None = None, device: str = "auto", max_batch: int = MAX_BATCH,
                 precision: str = "auto", speedups: Speedups = Speedups(), cache_bytes: int = DEFAULT_CACHE_BYTES,
                 work_budget_s: float | None = None, hub_models_at_once: int | None = None,
                 runner: Runner | None = None, autoencoders: Path | None = None, max_text_batch: int = MAX_TEXT_BATCH,
                 backend: Backend | None = None):
        """``precision``: "auto" (bf16 autocast for the UNet on CPUs with native bf16), "fp32" or "bf16";
        ``speedups``: optional channels_last / torch.compile for the UNets; ``cache_bytes``: the results
        kept for identical requests (0: no sharing at all, every request runs); ``work_budget_s``: the
        most estimated compute one request may ask for (None: no limit; a Space sets one);
        ``hub_models_at_once``: hub models kept loaded together (None: no limit; a Space keeps 1).
        ``runner``: what runs the requests' steps and owns the compute gate (:mod:`diffusion.runners`; default a
        :class:`~diffusion.runners.FairRunner`: every request's steps in turns on one model thread; the UI runs
        every model event on it). ``autoencoders``: the
        folder of the autoencoders compared by downsampling factor (default ``assets/autoencoders``).
        ``max_batch`` and ``max_text_batch``: the most images one request may ask of a pixel model and of a text
        model (the CLI, which runs its own batches, lifts the second to the first)."""
        self.registry = registry or Registry.default()
        # the autoencoders lesson 6 compares by downsampling factor, loaded when first asked for
        self.autoencoders = Autoencoders(autoencoders if autoencoders is not None else ASSETS / "autoencoders")
        self.store = ModelStore(self.registry, device, precision, speedups, hub_models_at_once)
        self.work_budget_s = work_budget_s
        self.max_batch = max_batch
        self.max_text_batch = max_text_batch
        self.backend = backend
        self.runner: Runner = runner if runner is not None else FairRunner()
        self.gate = self.runner.gate  # every denoising step of every request passes it
        self.results: ResultCache[Progress] = ResultCache(cache_bytes)
        self.flights: Flights[Progress] = Flights()
        # how long a request that follows an identical one in flight waits for its next update, off the runner's
        # model thread (a CLI thread); on it a follower never blocks (diffusion.cache)
        self.follow_wait_s = 0.05
        # the playground: 2-D point models trained live (Algorithm 1), through the same gate
        self.playground = Playground(self.gate)
        # the trajectory planner (Janner et al. 2022): plans in mazes, through the same gate
        self.planner = PlannerDesk(self.gate)
        # the lessons' own views (Ho et al.'s Figs. 6 and 7, the denoising error, memorisation, cost by factor)
        self.lessons = LessonViews(self)

    # ----- model cards -----
    def cards(self, kind: ModelKind | None = None) -> list[ModelCard]:
        return list(self.registry.cards.values()) if kind is None else self.registry.of_kind(kind)

    def card(self, model_id: str) -> ModelCard:
        """The card of ``model_id``; ``ValueError`` naming the available ids when there is none."""
        try:
            return self.registry.get(str(model_id))
        except KeyError as error:
            raise ValueError(error.args[0]) from None

    def load(self, model_id: str) -> LoadedModel:
        return self.store.get(self.card(model_id).id)

    def weights(self) -> dict[str, str]:
        """The weights digest (:func:`diffusion.loading.weights_digest`, 12 hex digits) of each model that
        ships with the app, read from its files without loading it: what the footer shows and recipes record."""
        return {card.id: weights_digest(card.source) for card in self.registry.cards.values()
                if card.embedded and Path(card.source).is_dir()}

    # ----- the one check -----
    def prepare(self, model_id: str, request: SampleRequest, max_batch: int | None = None) -> Run:
        """Check ``request`` for ``model_id`` once, before any model work (``ValueError``, readable), load the model
        and build the run's scheduler (:meth:`prepare_all` of one request)."""
        return self.prepare_all(model_id, [request], max_batch)[0]

    def prepare_all(self, model_id: str, requests: Sequence[SampleRequest], max_batch: int | None = None,
                    cap_steps: bool = False) -> list[Run]:
        """Check ``requests`` for ``model_id`` once, before any model work (``ValueError``, readable): each one's
        bounds, then the compute budget of all together, before the model is loaded; then load it, check each
        one's steps against the model's own timesteps (``cap_steps``: cap them instead, as the race's "DDPM
        1000" runs all of a model's timesteps) and build each run's fresh scheduler. Form values are normalised
        (4.0 steps -> 4); a pixel model ignores guidance (it has none)."""
        card = self.card(model_id)
        # a latent image costs more than a pixel one, so a text model's batch has its own, smaller bound
        limit = max_batch or self.max_batch
        if card.kind != "pixel":
            limit = min(limit, self.max_text_batch)
        checked = [check_request(replace(r, guidance_scale=1.0) if card.kind == "pixel" else r, MAX_STEPS, limit,
                                 card.kind != "pixel", card.id) for r in requests]
        self.check_budget(card, checked)
        model = self.store.get(card.id)
        most = max_steps_for(model.scheduler_config)
        runs = []
        for request in checked:
            if cap_steps:
                request = replace(request, steps=min(request.steps, most))
            whole_number(request.steps, "Steps", 1, most)
            runs.append(Run(card, model, request, make_scheduler(request.sampler, model.scheduler_config)))
        return runs

    def check_budget(self, card: ModelCard, requests: Sequence[SampleRequest]) -> None:
        """``ValueError`` saying what fits when the requests together need more estimated compute than
        :attr:`work_budget_s` (:func:`diffusion.work_budget.check_work_budget`)."""
        check_work_budget(card, requests, self.work_budget_s)

    # ----- sampling -----
    def run_steps(self, run: Run, init_sample: torch.Tensor | None = None, start: int = 0,
               record_attention: bool = False, start_sample: torch.Tensor | None = None) -> Iterator[StepRecord]:
        """The loop's records for ``run``, one step at a time through the compute gate: a consumer
        that stops asking (a cancelled request) stops the work within one step."""
        model = run.model
        if run.text:
            records = latent_steps(model, run.request, init_sample=init_sample, start_index=start,
                                   record_attention=record_attention, scheduler=run.scheduler)
        else:
            records = pixel_steps(model.unet, model.scheduler_config, run.request, init_sample, start,
                                  model.autocast_dtype, scheduler=run.scheduler, start_sample=start_sample)
        steps = self.gate.steps(records, progress=record_progress)  # the progress: the fair runner's estimate
        try:
            yield from steps
        finally:
            steps.close()  # a consumer that stopped: the loop is closed at once

    @model_work(stream=True)
    def generate(self, model_id: str, request: SampleRequest, previews: int = 20,
                 init_image: np.ndarray | None = None, start_timestep: int | None = None) -> Iterator[Progress]:
        """Sample ``request.n`` images: one update per step, then the result.

        About ``previews`` of the updates carry a decoded preview of the predicted x0 (``preview``
        is None on the others, so progress bars cost no decoding); ``previews=0`` decodes none.
        With ``init_image`` (uint8) the run starts from that image noised to ``start_timestep``
        (SDEdit, Meng et al. 2022): small t keeps the content, large t invents new content.

        Identical requests share work (:mod:`diffusion.cache`): one that arrives while an identical
        one runs follows it, one that arrives later gets its stored result (``cached``); both are
        bit-identical to running it.

        The request is checked and its model loaded when this is called (``ValueError`` at once, in the caller's
        thread); the returned iterator only runs the model.
        """
        run = self.prepare(model_id, request)
        if init_image is not None:  # SDEdit (never shared: the image is part of the request)
            T = int(run.model.scheduler_config.get("num_train_timesteps", 1000))
            return self._generate(run, previews, init_image, whole_number(start_timestep or 0, "t", 0, T - 1))
        if self.results.max_bytes <= 0:  # sharing off
            return self._generate(run, previews)
        return self._shared(run, previews)

    def _shared(self, run: Run, previews: int) -> Iterator[Progress]:
        """:meth:`generate`'s run, shared with identical requests (the stored result, or following one in flight;
        :func:`diffusion.cache.shared_run`); a follower on the runner's model thread never blocks it."""
        key = (run.card.id, precision_name(run.model.autocast_dtype), run.request, previews)
        idle = Progress(0, run.request.steps, 0.0, None, 0.0, 0, request=run.request)
        # asked at the first step, on the thread that runs it (generate itself is called in the request's handler)
        wait_s = 0.0 if self.runner.on_thread() else self.follow_wait_s
        yield from shared_run(key, self.results, self.flights, lambda: self._generate(run, previews), idle, wait_s,
                              lambda update: update.done, lambda result: replace(result, cached=True),
                              lambda result: result.images.nbytes + result.grid.nbytes,
                              lambda update: replace(update, preview=None))  # a preview is sent once

    def _generate(self, run: Run, previews: int, init_image: np.ndarray | None = None,
                  start_timestep: int | None = None) -> Iterator[Progress]:
        """The run itself: :meth:`generate` without sharing (:func:`diffusion.runs.sampling_updates`)."""
        return sampling_updates(run, previews, lambda init, start: self.run_steps(run, init, start), init_image,
                                start_timestep)

    def sample(self, model_id: str, request: SampleRequest) -> np.ndarray:
        """Final uint8 images only (N, H, W) or (N, H, W, 3)."""
        *_, final = self.generate(model_id, request, previews=0)
        assert final.images is not None
        return final.images

    # ----- recipes -----
    def read_recipe(self, text: str) -> tuple[Recipe, list[str]]:
        """A recipe (JSON text, :class:`diffusion.recipe.Recipe`) checked against this app: its model is served
        here and its scheduler config is the one this model and sampler build (``ValueError`` otherwise). The
        notes say what may make a replay differ from the original: other library versions or precision."""
        return self._checked(Recipe.from_json(text))

    def read_link(self, link: str) -> tuple[Recipe, list[str]]:
        """The recipe of a shared run: a whole link (``...?run=TOKEN``, as pasted) or its parameter alone
        (:func:`diffusion.recipe.recipe_from_link`), checked as :meth:`read_recipe` checks a file."""
        return self._checked(recipe_from_link(link))

    def _checked(self, recipe: Recipe) -> tuple[Recipe, list[str]]:
        model = self.load(self.card(recipe.model).id)
        return recipe, recipe.replay_notes(model.scheduler_config, model.weights, precision_name(model.autocast_dtype))

    # ----- the step lab -----
    @model_work(stream=True)
    def trajectory(self, model_id: str, request: SampleRequest,
                   images: int = 1) -> Iterator[tuple[int, int, Trajectory]]:
        """Run the reverse process for ``images`` images (1..16; ``request.n`` is ignored),
        recording a :class:`StepView` per step.

        Yields ``(done, total, trajectory)`` as it goes (the trajectory grows in place); the
        trajectory carries each step's update (``terms``), the schedule, the recipe and the precision.
        Memory is bounded by keeping only uint8 pictures (for several images, grids of them), and for
        text models the first image's float16 guidance pair and latent channels, and (one-image
        runs) float16 cross-attention maps at the latent's size for the prompt's tokens. Checked and loaded
        when called; the iterator only runs the model.
        """
        try:
            count = whole_number(images, "Images", 1, MAX_LAB_IMAGES)
        except ValueError:
            raise ValueError(f"the step lab records 1 to {MAX_LAB_IMAGES} images, got {images!r}") from None
        return self._trajectory(self.prepare(model_id, replace(request, n=count)))

    def _trajectory(self, run: Run) -> Iterator[tuple[int, int, Trajectory]]:
        """:meth:`trajectory`'s run of the checked ``run`` (:func:`diffusion.lab.trajectory.record_run`)."""
        return record_run(run.card.id, run.model, run.request, run.scheduler, precision_name(run.model.autocast_dtype),
                          run.text, lambda attention: self.run_steps(run, record_attention=attention))

    @model_work(stream=True)
    def race(self, model_id: str, request: SampleRequest,
             lanes: tuple[tuple[str, int], ...] = DEFAULT_RACE) -> Iterator[list[RaceLane]]:
        """One seed, several samplers: run them cheapest first and yield the lanes as they grow.

        Yields after every step of every lane (the UI redraws about every 5% of a lane:
        :func:`race_milestones`; DDPM-1000 streams while the others are already shown).
        Memory: one uint8 image per step per lane. Checked and loaded when called.
        """
        runs = self.prepare_all(model_id, [replace(request, n=1, sampler=sampler, steps=min(steps, MAX_STEPS))
                                           for sampler, steps in lanes], cap_steps=True)
        model = runs[0].model
        return run_race([RaceLane(run.request.sampler, run.request.steps) for run in runs],
                        [run.scheduler.alphas_cumprod.numpy() for run in runs],
                        [lambda run=run: self.run_steps(run) for run in runs], lambda x: pictures(model, x))

    @model_work(stream=True)
    def guidance_view(self, model_id: str, view: StepView,
                      scales: tuple[float, ...] = GUIDANCE_SCALES) -> Iterator[GuidanceView]:
        """Classifier-free guidance at one recorded step of a text model's run, for each scale in ``scales``
        (:func:`diffusion.lab.trajectory.decompose_guidance`): a stream of one item (:func:`diffusion.later.later`),
        checked and loaded when called."""
        if view.guidance is None:
            raise ValueError("this step has no guidance record: use a text model with guidance > 1")
        model = self.load(model_id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        return later(lambda: decompose_guidance(model, scheduler, view, scales))

    @model_work(stream=True)
    def forward_process(self, model_id: str, image: np.ndarray, timestep: int,
                        seed: int = 0) -> Iterator[ForwardView]:
        """The forward process on the user's uint8 image at training timestep ``timestep`` (Eq. 4): a stream of one
        item, checked and loaded when called."""
        model, scheduler, (t,), seed = self._forward(model_id, [timestep], seed)
        return later(lambda: forward_process(model, scheduler, image, t, seed))

    @model_work(stream=True)
    def forward_strip(self, model_id: str, image: np.ndarray, timesteps: Sequence[int],
                      seed: int = 0) -> Iterator[np.ndarray]:
        """x_t of one image at several t, uint8 (len(timesteps), H, W[, 3]), one noise draw: a stream of one item,
        checked and loaded when called."""
        model, scheduler, ts, seed = self._forward(model_id, timesteps, seed)
        return later(lambda: forward_strip(model, scheduler, image, ts, seed))

    def _forward(self, model_id: str, timesteps: Sequence[int], seed: int) -> tuple:
        """The forward views' model, noise scheduler, timesteps (each in [0, T - 1]) and seed, checked and loaded."""
        model = self.load(model_id)
        scheduler = make_scheduler("ddpm", model.scheduler_config)
        T = len(scheduler.alphas_cumprod)
        ts = [whole_number(t, "t", 0, T - 1) for t in timesteps]
        return model, scheduler, ts, whole_number(seed, "Seed", 0, MAX_SEED)

    @staticmethod
    def layouts(request: SampleRequest) -> list[Layout | None]:
        """The planned layout of each image of a (checked) text request, as the run draws it: None for an image
        drawn by the plain model (a prompt that names no two objects, ``layout`` "off", or Attend-and-Excite)."""
        return request_layouts(request)

    @staticmethod
    def layout_fallback(request: SampleRequest) -> str | None:
        """Why a text request that relates things ("a cat left of a dog") is drawn by the plain model although
        its layout switch is "auto", in a sentence for the user; None when it is drawn by layout, when the switch
        is off or Attend-and-Excite is on (the user chose the plain path), or when the prompt relates nothing."""
        if request.layout != "auto" or request.attend_excite:
            return None
        return why_plain(str(request.prompt))

    @model_work()
    def prompt_tokens(self, model_id: str, prompt: str) -> PromptTokens:
        """How a text model reads ``prompt``: its tokens, unknown words and words past its token limit."""
        card = self.card(model_id)
        if card.kind != "latent-text":
            raise ValueError(f"{card.id} reads no prompt (choose a text model)")
        if len(str(prompt)) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is limited to {MAX_PROMPT_CHARS} characters")
        return model_reads(self.load(card.id), str(prompt))

    @model_work()
    def schedule(self, model_id: str) -> ScheduleCurves:
        """The model's training noise schedule (loads the model to read its scheduler config)."""
        return ScheduleCurves.of(make_scheduler("ddpm", self.load(model_id).scheduler_config))

    @staticmethod
    def schedule_family(num_train_timesteps: int = 1000) -> dict[str, ScheduleCurves]:
        """DDPM's linear, Stable Diffusion's scaled-linear and the cosine schedule, for comparison."""
        return schedule_family(num_train_timesteps)

