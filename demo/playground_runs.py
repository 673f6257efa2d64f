"""The playground's runs: Algorithm 1 trained live on 2-D points and the trained model sampled, streamed, with the
user's session that keeps them (the tab itself: :mod:`demo.tab_playground`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from demo.common import Shown, Tick, as_int, kept, readable, streamed, user_errors
from diffusion.studio import (
    SAMPLERS,
    ExportDir,
    ParticleRun,
    PointConfig,
    PointModel,
    SampleProgress,
    StateBudget,
    Studio,
    TrainUpdate,
    cloud_picture,
    run_frames,
    write_animation,
)

LOSS_POINTS = 300  # the loss curve is sent as at most this many points (a moving average)


@dataclass
class PlaygroundSession:
    """Per-user state: the trained model (config + weights as bytes), its training data for drawing, and the
    last sampling run. Held under the app's :class:`StateBudget`, which may ``release`` it."""

    model: PointModel | None
    data: np.ndarray | None
    run: ParticleRun | None = None
    released: str | None = None

    def release(self, reason: str) -> None:
        self.model, self.data, self.run, self.released = None, None, None, reason

    @property
    def nbytes(self) -> int:
        arrays = [a for a in (self.data, *(() if self.run is None else (self.run.x_t, self.run.pred_x0))) if a is not None]
        return (self.model.nbytes if self.model is not None else 0) + sum(a.nbytes for a in arrays)


def session_model(session: PlaygroundSession | None) -> tuple[PointModel, np.ndarray]:
    model = kept(session, "model", "Train a model first (press Train).", "Your playground model", "train it again")
    return model, session.data  # released together (PlaygroundSession.release)


def session_run(session: PlaygroundSession | None) -> ParticleRun:
    session_model(session)
    if session.run is None:
        raise gr.Error("Sample first (press Sample).")
    return session.run


def loss_frame(losses: list[float] | tuple[float, ...]) -> pd.DataFrame:
    """The loss of every step as a moving average over 50 steps, thinned to about LOSS_POINTS points."""
    values = np.asarray(losses, np.float64)
    if not len(values):
        return pd.DataFrame({"step": [], "loss": []})
    window = min(50, len(values))
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    steps = np.arange(window, len(values) + 1)
    keep = np.unique(np.linspace(0, len(smooth) - 1, min(len(smooth), LOSS_POINTS)).round().astype(int))
    return pd.DataFrame({"step": steps[keep], "loss": smooth[keep]})


def quality_note(distance: float, floor: float) -> str:
    return (f"sliced Wasserstein distance to fresh data **{distance:.3f}** (two samples of the data: {floor:.3f}, "
            f"so {distance / floor:.2f}× the floor)")


def config_from_form(studio: Studio, dataset: str, word: str, drawing: dict | None, schedule: str,
                     timesteps: float, steps: float, seed: float) -> PointConfig:
    """A checked config from the form; a drawing only for the "drawing" set (``ValueError`` when empty)."""
    packed = ""
    if dataset == "drawing":
        composite = drawing.get("composite") if isinstance(drawing, dict) else None
        if composite is None:
            raise ValueError("draw something on the sketchpad first (or choose another data set)")
        packed = studio.playground.drawing(np.asarray(composite))
    return studio.playground.config(dataset=dataset, word=str(word or "") if dataset == "word" else "",
                                    drawing=packed, schedule=schedule, num_train_timesteps=timesteps,
                                    steps=steps, seed=seed)


# ----- training -----
def make_playground_train(studio: Studio, budget: StateBudget):
    @streamed(studio.runner)
    def playground_train(dataset: str, word: str, drawing: dict | None, schedule: str, timesteps: float,
                         steps: float, seed: float) -> Shown:
        """Train a small denoiser on 2-D points live (DDPM Algorithm 1): streamed loss, samples and snapshots; ``steps`` training steps."""
        with user_errors():  # checked here, before the model thread
            config = config_from_form(studio, dataset, word, drawing, schedule, timesteps, steps, seed)
            data = studio.playground.data(config)
        return Shown((studio.playground.train(config),),
                     lambda updates: readable(train_updates(updates, config, data, budget)))

    return playground_train


def train_updates(updates: Iterator[TrainUpdate], config: PointConfig, data: np.ndarray,
                  budget: StateBudget) -> Iterator[tuple | Tick]:
    """A training run as the tab shows it: the loss and sample clouds as they come, then the trained model kept in
    the user's session and its snapshots, drawn off the model thread."""
    yield Tick((gr.skip(), "Training: step 0", gr.skip(), cloud_picture(None, data), gr.skip()), preview=True)
    for update in updates:
        rate = update.step / max(update.wall_s, 1e-9)
        status = f"Training: step {update.step}/{update.total}, {update.wall_s:.1f} s ({rate:.0f} steps/s)"
        if update.model is not None:
            break
        if update.samples is not None:
            if update.distance is not None:
                status += f" · at step {update.step}: distance {update.distance:.3f}"
            yield Tick((gr.skip(), status, loss_frame(update.losses), cloud_picture(update.samples, data),
                        gr.skip()), preview=True)
        else:
            yield Tick((gr.skip(), status, loss_frame(update.losses), gr.skip(), gr.skip()))
    model = update.model

    def finished() -> tuple:
        session = PlaygroundSession(model, data)
        budget.admit(session, session.nbytes)
        snapshots = [(cloud_picture(s.cloud, data, side=240), f"step {s.step}: distance {s.distance:.3f}")
                     for s in model.snapshots]
        return (session, f"**Trained** {config.steps} steps in {model.train_s:.1f} s "
                         f"({config.steps / model.train_s:.0f} steps/s) · " + quality_note(model.distance, model.floor),
                loss_frame(model.losses), cloud_picture(model.snapshots[-1].cloud, data), snapshots)

    yield finished()


# ----- sampling -----
def frame_picture(run: ParticleRun, data: np.ndarray | None, index: int) -> tuple[np.ndarray, str]:
    """x_t of frame ``index`` (0: the starting noise) in blue, and the step's predicted x0 in vermillion."""
    steps = len(run.timesteps)
    second = run.pred_x0[index] if index < steps else None
    picture = cloud_picture(run.x_t[index], data, second=second)
    if index < steps:
        return picture, (f"Frame {index}: $x_t$ at $t = {run.timesteps[index]:.0f}$ (blue) and the model's "
                         f"$\\hat x_0$ (vermillion), before step {index + 1} of {steps}.")
    return picture, f"Frame {index}: the samples $x_0$ after all {steps} steps."


def make_playground_sample(studio: Studio, budget: StateBudget, exports: ExportDir):
    @streamed(studio.runner)
    def playground_sample(session: PlaygroundSession | None, sampler: str, steps: float, particles: float,
                          seed: float, eta: float) -> Shown:
        """Sample ``particles`` points from the user's trained model with ``sampler`` in ``steps`` steps, streamed frame by frame."""
        model, data = session_model(session)
        return Shown((studio.playground.sample(model, sampler, steps, particles, seed, eta),),
                     lambda updates: readable(sample_updates(updates, session, data, budget, exports)))

    return playground_sample


def sample_updates(updates: Iterator[SampleProgress], session: PlaygroundSession, data: np.ndarray | None,
                   budget: StateBudget, exports: ExportDir) -> Iterator[tuple | Tick]:
    """A sampling run as the tab shows it: the step count, then the run kept in the user's session with its
    animation (written off the model thread)."""
    for progress in updates:
        if progress.run is None:
            yield Tick((gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                        f"Sampling: step {progress.done}/{progress.total}"))
    run = progress.run

    def finished() -> tuple:
        gif = write_animation(run_frames(run.x_t, data), exports.path("reverse.gif"), fps=12)
        session.run = run
        budget.admit(session, session.nbytes)
        last = len(run.x_t) - 1
        picture, caption = frame_picture(run, data, last)
        status = (f"**Sampled** {run.x_t.shape[1]} particles with {SAMPLERS[run.sampler].title}, "
                  f"{len(run.timesteps)} steps, in {run.wall_s:.2f} s.")
        return (session, str(gif), gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
                picture, caption, status)

    yield finished()


def playground_show(session: PlaygroundSession | None, frame: float) -> tuple:
    """Frame ``frame`` (0 = the starting noise) of the user's last sampling run."""
    run = session_run(session)
    return frame_picture(run, session.data, as_int(frame, "Frame", 0, len(run.x_t) - 1))
