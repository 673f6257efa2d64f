"""The sampler race: one seed, several samplers, compared at equal noise levels, not equal step indices."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from typing import Any

import numpy as np

from diffusion.images import make_grid

# (sampler, steps): DDPM with all of a model's timesteps against three fast samplers
DEFAULT_RACE: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 50), ("dpmpp-2m", 20), ("euler", 30))
RACE_LEVELS = np.array([0.002, 0.02, 0.1, 0.3, 0.6, 0.85, 0.97, 0.995])  # alpha-bar targets, noisy -> clean


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



def labelled_race_grid(lanes: list[RaceLane], levels: np.ndarray = RACE_LEVELS, tile: int = 96,
                       font_size: int = 16) -> np.ndarray:
    """:func:`race_grid` drawn to be read without the text around it (a projected picture): tiles enlarged
    to about ``tile`` pixels, each row labelled with its sampler and steps, each column with its alpha-bar.
    uint8 RGB (H, W, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    grid = race_grid(lanes, levels, pad=0)
    rows, cols = len(lanes), len(levels)
    h, w = grid.shape[0] // rows, grid.shape[1] // cols
    factor = max(1, tile // max(h, w))
    big = grid.repeat(factor, 0).repeat(factor, 1)
    if big.ndim == 2:
        big = np.repeat(big[..., None], 3, axis=-1)
    font = ImageFont.load_default(size=font_size)
    names = [f"{lane.sampler} {lane.steps}" for lane in lanes]
    left = max(int(font.getlength(n)) for n in [*names, "alpha-bar:"]) + 12
    top = font_size + 12
    canvas = Image.new("RGB", (left + big.shape[1], top + big.shape[0]), "white")
    canvas.paste(Image.fromarray(big), (left, top))
    draw = ImageDraw.Draw(canvas)
    th, tw = h * factor, w * factor
    for r, name in enumerate(names):
        draw.text((6, top + r * th + th // 2), name, fill="black", font=font, anchor="lm")
    draw.text((6, top // 2), "alpha-bar:", fill="black", font=font, anchor="lm")  # the columns' quantity
    for c, level in enumerate(levels):
        draw.text((left + c * tw + tw // 2, top // 2), f"{level:g}", fill="black", font=font, anchor="mm")
    return np.asarray(canvas)


def run_race(lanes: list[RaceLane], alphas_cumprod: list[np.ndarray], records: list[Callable[[], Iterator[Any]]],
             pictures: Callable[[Any], np.ndarray]) -> Iterator[list[RaceLane]]:
    """Run the lanes cheapest first, each from ``records[i]()`` (its loop records through the compute gate) with
    its scheduler's alpha-bar; ``pictures(x)`` decodes a batch to uint8. Yields all the lanes after every step of
    every lane: a consumer that stops asking stops the race within one step."""
    for lane, alphas, run in sorted(zip(lanes, alphas_cumprod, records, strict=True), key=lambda t: t[0].steps):
        began = time.perf_counter()
        for record in run():
            # the picture first: a reader on another thread (the app's view of the race) takes each lane's steps
            # by its alpha-bars, which then never outnumber its pictures
            lane.pred_x0.append(pictures(record.pred_original_sample)[0])
            lane.alpha_prod.append(float(alphas[int(round(record.timestep))]))
            lane.model_calls += 1
            lane.wall_s = time.perf_counter() - began
            if record.is_last:
                lane.final = pictures(record.prev_sample)[0]
            yield lanes
