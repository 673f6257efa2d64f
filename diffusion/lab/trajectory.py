"""The step-by-step view: every step of one run as small pictures and numbers, kept for scrubbing.

A :class:`Trajectory` holds, per step, x_t, the predicted noise and the predicted x0 as uint8
pictures, and for text models the step's guidance pair and cross-attention maps (float16), so the
step slider, the guidance decomposition and the attention view need no model call. It also carries
what the views typeset: each step's update (:mod:`diffusion.explain`), the schedule and the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.attention import AttentionMaps
from diffusion.explain import StepTerms, step_terms
from diffusion.images import latent_channels, tile, to_display
from diffusion.lab.schedules import ScheduleCurves
from diffusion.loop import StepRecord, predict_original_sample, predicted_noise
from diffusion.pipeline import pictures
from diffusion.prompts import token_labels
from diffusion.recipe import Recipe, make_recipe
from diffusion.request import SampleRequest


@dataclass(frozen=True)
class RegionView:
    """One object of a layout-grounded step (diffusion.layout), first image: its caption, its weight in the
    composed prediction as a uint8 picture at the image's size (255 = the object's prediction alone), and the
    predicted x0 of its own guided prediction (what its caption alone would make of this x_t), decoded."""

    caption: str
    weight: np.ndarray
    pred_x0: np.ndarray


#: Samplers whose update has the x0 form x_{t-1} = c0 x0_hat + ct x_t + sigma z (Ho et al. 2020, Eq. 7; Song et al.
#: 2021, Eq. 12 with its eps written through x_t and x0_hat), exact even when x0_hat is clipped.
X0_FORM_SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class UpdatePictures:
    """One step's update of the first image drawn as the pictures that add up to x_{t-1}:
    ``coef_x0`` * x0_hat + ``coef_xt`` * x_t + the noise term (sigma z: x_{t-1} minus the other two, so the sum is
    exact; 0 for DDIM with eta = 0). The three terms and ``result`` (x_{t-1}) are uint8 (H, W) or (H, W, 3) in model
    space (latent models: the first three channels), all mapped from [-``scale``, ``scale``] to [0, 255] with one
    scale, so that the pictures add up as they look; ``noise_std`` is sigma."""

    coef_x0: float
    coef_xt: float
    noise_std: float
    x0_term: np.ndarray
    xt_term: np.ndarray
    noise_term: np.ndarray
    result: np.ndarray
    scale: float

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x0_term, self.xt_term, self.noise_term, self.result))


def update_terms(record: StepRecord, terms: StepTerms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(c0 x0_hat, ct x_t, the noise term) of the first image of a DDPM or DDIM step, float (C, H, W), whose sum is
    the step's x_{t-1}; None for the other samplers (their update is not in the x0 form)."""
    if terms.sampler not in X0_FORM_SAMPLERS:
        return None
    x_t = record.sample[0].double()
    x0_term = terms.coef_x0 * record.pred_original_sample[0].double()
    xt_term = terms.coef_xt * x_t
    return x0_term, xt_term, record.prev_sample[0].double() - x0_term - xt_term


def update_pictures(record: StepRecord, terms: StepTerms | None) -> UpdatePictures | None:
    """:class:`UpdatePictures` of a DDPM or DDIM step (None for other samplers, or without ``terms``)."""
    parts = None if terms is None else update_terms(record, terms)
    if parts is None:
        return None
    x0_term, xt_term, noise_term = parts
    result = x0_term + xt_term + noise_term
    shown = torch.stack([p[:3] for p in (x0_term, xt_term, noise_term, result)])
    scale = max(float(shown.abs().flatten().quantile(0.999)), 1e-6)
    drawn = [to_display(p[None], -scale, scale)[0] for p in (x0_term, xt_term, noise_term, result)]
    return UpdatePictures(terms.coef_x0, terms.coef_xt, terms.noise_std, *drawn, scale=scale)


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
    regions: tuple[RegionView, ...] | None = None  # text models drawing by layout: each object's region
    layout_phase: str | None = None  # and the step's phase (diffusion.layout.PHASES)
    update: UpdatePictures | None = None  # DDPM and DDIM: the update as pictures that add up to x_{t-1}


@dataclass
class Trajectory:
    """A step-lab run: its request (``n`` = the images recorded), the steps so far and the final images.

    ``terms`` gives each step's update with its numbers, ``curves`` the model's training schedule,
    ``recipe`` the JSON that replays the run and ``precision`` the UNet's arithmetic ("fp32"/"bf16").
    """

    model_id: str
    request: SampleRequest
    steps: list[StepView] = field(default_factory=list)
    final: np.ndarray | None = None
    wall_s: float = 0.0
    tokens: list[str] | None = None  # text models: labels of the attention maps (start, words, end, padding)
    attention_layers: dict[str, int] | None = None  # cross-attention layers per resolution ("8x8": 2, ...)
    terms: list[StepTerms] = field(default_factory=list)
    curves: ScheduleCurves | None = None
    recipe: Recipe | None = None
    precision: str = "fp32"


def _half(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float16)


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


def step_view(model: Any, scheduler: SchedulerMixin, curves: ScheduleCurves, record: StepRecord,
              kept_tokens: int | None, terms: StepTerms | None = None) -> StepView:
    """The pictures and numbers of one loop record (every image of the batch, tiled into one grid).

    ``scheduler`` is the run's own (read for the prediction type only); ``kept_tokens``: the number of
    prompt tokens whose attention maps are kept (None: no maps); ``terms``: the step's update, to draw it as
    pictures (:func:`update_pictures`).
    """
    latent = getattr(model, "vae", None) is not None
    t = int(round(record.timestep))
    x_t_range = (-3.0, 3.0) if latent else (-1.0, 1.0)
    return StepView(
        index=record.index, timestep=record.timestep,
        alpha_prod_t=float(curves.alphas_cumprod[t]), beta_t=float(curves.betas[t]),
        x_t=tile(to_display(record.model_input, *x_t_range)),
        noise=tile(to_display(predicted_noise(scheduler, record.model_input, record.model_output, t), -3.0, 3.0)),
        pred_x0=tile(pictures(model, record.pred_original_sample)),
        guidance=None if record.noise_pred_uncond is None else GuidancePair(
            model_input=_half(record.model_input[0]), uncond=_half(record.noise_pred_uncond[0]),
            text=_half(record.noise_pred_text[0]), guidance_scale=float(record.guidance_scale or 1.0)),
        latents=latent_channels(record.model_input[0]) if latent else None,
        attention=None if record.cross_attention is None or kept_tokens is None
        else attention_summary(record.cross_attention, kept_tokens),
        regions=region_views(model, scheduler, record),
        layout_phase=None if record.layout is None else record.layout.phase,
        update=update_pictures(record, terms),
    )


def region_views(model: Any, scheduler: SchedulerMixin, record: StepRecord) -> tuple[RegionView, ...] | None:
    """The first image's regions of a layout-grounded step (None when it was not drawn by layout)."""
    step = record.layout
    if step is None or step.layouts[0] is None:
        return None
    t = int(round(record.timestep))
    size = model.card.resolution
    views = []
    for k, (caption, weight, prediction) in enumerate(zip(step.layouts[0].captions(), step.weights[0],
                                                          step.predictions[0], strict=True)):
        eps = prediction[None]
        if step.uncond is not None and record.guidance_scale is not None:  # its own guided prediction
            uncond = step.uncond[:1, k]
            eps = uncond + float(record.guidance_scale) * (eps - uncond)
        seen = record.model_input[:1] if step.inputs is None else step.inputs[:1, k]
        x0 = predict_original_sample(scheduler, seen.float(), eps.float(), t)
        scale = size // weight.shape[-1]
        picture = np.kron((weight.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(),
                          np.ones((scale, scale), np.uint8))
        views.append(RegionView(caption, picture, pictures(model, x0.to(record.model_input.dtype))[0]))
    return tuple(views)


def trajectory_nbytes(traj: Trajectory) -> int:
    """Bytes of the arrays a trajectory keeps (its pictures, guidance pairs and attention maps)."""
    total = 0 if traj.final is None else traj.final.nbytes
    for view in traj.steps:
        total += view.x_t.nbytes + view.noise.nbytes + view.pred_x0.nbytes
        total += 0 if view.latents is None else view.latents.nbytes
        if view.guidance is not None:
            total += view.guidance.model_input.nbytes + view.guidance.uncond.nbytes + view.guidance.text.nbytes
        total += sum(a.nbytes for a in (view.attention or {}).values())
        total += sum(r.weight.nbytes + r.pred_x0.nbytes for r in view.regions or ())
        total += 0 if view.update is None else view.update.nbytes
    return total


# ----- guidance -----
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0, 7.0, 10.0)


@dataclass(frozen=True)
class GuidanceView:
    """The guidance decomposition at one step (uint8 pictures; x0 decoded for each scale)."""

    uncond: np.ndarray
    text: np.ndarray
    direction: np.ndarray  # (eps_text - eps_uncond) * direction_scale, mapped from [-1, 1]
    scales: tuple[float, ...]
    pred_x0: tuple[np.ndarray, ...]
    direction_norm: float  # RMS of the guidance direction
    direction_scale: float = 1.0  # the factor the picture of the direction is drawn at (99th percentile at +-1)


def decompose_guidance(model: Any, scheduler: SchedulerMixin, view: StepView,
                       scales: tuple[float, ...] = GUIDANCE_SCALES) -> GuidanceView:
    """Classifier-free guidance at one recorded step, from its one cached pair of predictions.

    eps_w = eps_uncond + w (eps_text - eps_uncond) (Ho & Salimans 2022, Eq. 6; their w is this w - 1) and the
    predicted x0 for each w (DDPM Eq. 15), decoded; w = 0 is unconditional, w = 1 conditional.
    """
    pair = view.guidance  # a text model's step with guidance > 1 (checked by the caller, the Studio)
    assert pair is not None, "a step without a guidance record"
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
    decoded = pictures(model, x0.to(model.device, model.dtype))
    # the direction is small (RMS about 0.01 on the shapes model): drawn at [-1, 1] it is flat grey, so it is
    # scaled until its 99th percentile of the shown channels reaches +-1 (the rest clip), and the factor is
    # returned to be printed beside it
    scale = 1.0 / max(float(direction[:, :3].abs().float().quantile(0.99)), 1e-6)
    return GuidanceView(
        uncond=to_display(uncond, -3.0, 3.0)[0], text=to_display(text, -3.0, 3.0)[0],
        direction=to_display(direction * scale, -1.0, 1.0)[0], scales=tuple(scales),
        pred_x0=tuple(decoded), direction_norm=float(direction.pow(2).mean().sqrt()), direction_scale=scale)


# ----- cross-attention -----
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


def record_run(model_id: str, model: Any, request: SampleRequest, scheduler: SchedulerMixin, precision: str,
               text: bool, records: Callable[[bool], Iterator[StepRecord]]) -> Iterator[tuple[int, int, Trajectory]]:
    """A step-lab run of a checked ``request`` on ``model``, recorded step by step: yields (steps done, steps in
    all, the trajectory so far; it grows in place). ``text``: a text model. ``records(record_attention)`` gives the run's loop records
    (through the compute gate), with cross-attention maps when asked for (text models, one image). What the views
    typeset is read off the run's own ``scheduler`` before it runs."""
    traj = Trajectory(
        model_id, request, terms=step_terms(request.sampler, model.scheduler_config, request.steps, request.eta,
                                            scheduler=scheduler),
        curves=ScheduleCurves.of(scheduler), precision=precision,
        recipe=make_recipe(model_id, request, model.scheduler_config, precision, scheduler=scheduler,
                           weights=model.weights))
    record_attention = text and model.cross_attention_layers > 0 and request.n == 1
    kept = None
    if record_attention:
        traj.tokens = token_labels(model, request.prompt)
        kept = len(traj.tokens)
        if kept < model.tokenizer.model_max_length:  # prompts are padded to this length (encode_prompt)
            traj.tokens.append("padding")
    began = time.perf_counter()
    for record in records(record_attention):
        traj.steps.append(step_view(model, scheduler, traj.curves, record, kept, traj.terms[record.index]))
        if record.cross_attention is not None and traj.attention_layers is None:
            traj.attention_layers = {f"{r}x{r}": n for r, n in record.cross_attention.layers.items()}
        if len(traj.steps) > 1:
            traj.steps[-2].alpha_prod_t_prev = traj.steps[-1].alpha_prod_t
        traj.wall_s = time.perf_counter() - began
        if record.is_last:
            traj.final = tile(pictures(model, record.prev_sample))
        yield record.index + 1, record.num_steps, traj
