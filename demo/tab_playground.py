"""Tab: the playground. A diffusion model trained live on 2-D points (Algorithm 1), then sampled through the
same loop as the image models, with views of what it learned: the reverse and forward processes of the
particle cloud, the noise field and its score reading, DDPM against DDIM paths, the loss against t, and
snapshots taken during training. Every handler is named after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from demo.common import (
    LATEX,
    MODEL_CONCURRENCY,
    CheckedSketchpad,
    Drawn,
    LockedPlot,
    Tick,
    as_int,
    one_step,
    readable,
    streamed,
    user_errors,
)
from demo.figures import field_figure, loss_by_t_figure, paths_figure
from demo.theory import PATHS, PLAYGROUND, SCORE
from diffusion.studio import (
    EXTENT,
    MAX_PATHS,
    MAX_POINTS,
    MAX_SEED,
    MAX_TRAIN_STEPS,
    MAX_WORD_CHARS,
    POINT_DATASETS,
    SAMPLERS,
    SAMPLERS_HERE,
    TIMESTEP_CHOICES,
    ExportDir,
    ParticleRun,
    PointConfig,
    PointModel,
    SampleProgress,
    StateBudget,
    Studio,
    TrainUpdate,
    cloud_picture,
    make_grid,
    run_frames,
    write_animation,
)

CLOUD = {"format": "png", "interactive": False, "height": 380, "buttons": ["download", "fullscreen"]}
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


def _model(session: PlaygroundSession | None) -> tuple[PointModel, np.ndarray]:
    if session is None:
        raise gr.Error("Train a model first (press Train).")
    if session.model is None or session.data is None:
        raise gr.Error(f"Your playground model was released because {session.released}: train it again.")
    return session.model, session.data


def _run(session: PlaygroundSession | None) -> ParticleRun:
    _model(session)
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
                         steps: float, seed: float) -> Iterator[tuple]:
        """Train a small denoiser on 2-D points live (DDPM Algorithm 1): streamed loss, samples and snapshots; ``steps`` training steps."""
        with user_errors():  # checked here, before the model thread
            config = config_from_form(studio, dataset, word, drawing, schedule, timesteps, steps, seed)
            data = studio.playground.data(config)
        return readable(train_updates(studio.playground.train(config), config, data, budget))

    return playground_train


def train_updates(updates: Iterator[TrainUpdate], config: PointConfig, data: np.ndarray,
                  budget: StateBudget) -> Iterator[tuple | Tick | Drawn]:
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

    yield Drawn(finished)


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
                          seed: float, eta: float) -> Iterator[tuple]:
        """Sample ``particles`` points from the user's trained model with ``sampler`` in ``steps`` steps, streamed frame by frame."""
        model, data = _model(session)
        return readable(sample_updates(studio.playground.sample(model, sampler, steps, particles, seed, eta),
                                       session, data, budget, exports))

    return playground_sample


def sample_updates(updates: Iterator[SampleProgress], session: PlaygroundSession, data: np.ndarray | None,
                   budget: StateBudget, exports: ExportDir) -> Iterator[tuple | Tick | Drawn]:
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

    yield Drawn(finished)


def playground_show(session: PlaygroundSession | None, frame: float) -> tuple:
    """Frame ``frame`` (0 = the starting noise) of the user's last sampling run."""
    run = _run(session)
    return frame_picture(run, session.data, as_int(frame, "Frame", 0, len(run.x_t) - 1))


# ----- the other views -----
def make_playground_forward(studio: Studio, exports: ExportDir):
    def playground_forward(dataset: str, word: str, drawing: dict | None, schedule: str, timesteps: float,
                           seed: float) -> tuple:
        """The forward process on the chosen 2-D data: the points at several timesteps of ``schedule`` with ``timesteps`` steps."""
        with user_errors():
            config = config_from_form(studio, dataset, word, drawing, schedule, timesteps, 1, seed)
            ts, alpha_bar, clouds = studio.playground.forward(config, seed=seed)
            T = config.num_train_timesteps
            frames_t = sorted({round(t) for t in np.linspace(0, T - 1, 40)})
            _, _, frames = studio.playground.forward(config, timesteps=frames_t, seed=seed)
            gif = write_animation([cloud_picture(c) for c in frames] + [cloud_picture(frames[-1])] * 8,
                                  exports.path("forward.gif"), fps=12)
        strip = make_grid(np.stack([cloud_picture(c, side=240) for c in clouds]), ncols=len(clouds))
        note = " · ".join(f"$t = {t}$: $\\bar\\alpha_t = {a:.3f}$" for t, a in zip(ts, alpha_bar, strict=True))
        return strip, str(gif), (f"$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon$ (Ho et al. 2020, Eq. 4), "
                                 f"one $\\epsilon$ for all panels: {note}. At $t = T - 1$ the cloud is a standard Gaussian.")

    return one_step(studio.runner, playground_forward)


def make_playground_field(studio: Studio):
    def playground_field(session: PlaygroundSession | None, timestep: float, score: bool) -> tuple:
        """The trained model's predicted noise (or score) as arrows over the plane at ``timestep``."""
        model, data = _model(session)
        with user_errors():
            field = studio.playground.field(model, timestep, 21)
        norms = np.linalg.norm(field.score, axis=-1)
        note = (f"$t = {field.timestep}$, $\\bar\\alpha_t = {field.alpha_bar:.4f}$: score "
                f"$= -\\epsilon_\\theta / \\sqrt{{1-\\bar\\alpha_t}} = -\\epsilon_\\theta / {np.sqrt(1 - field.alpha_bar):.4f}$; "
                f"its length on the grid: median {np.median(norms):.2f}, largest {norms.max():.2f}.")
        return field_figure(field, data[:1000], EXTENT, bool(score)), note

    return one_step(studio.runner, playground_field)


def make_playground_paths(studio: Studio):
    def playground_paths(session: PlaygroundSession | None, particles: float, seed: float, steps: float) -> object:
        """The paths ``particles`` points take from noise to data in ``steps`` DDIM steps (eta 0) with ``seed``."""
        model, data = _model(session)
        with user_errors():
            paths = studio.playground.paths(model, particles, seed, steps)
        return paths_figure(paths, data[:1000], EXTENT)

    return one_step(studio.runner, playground_paths)


def make_playground_loss(studio: Studio):
    def playground_loss(session: PlaygroundSession | None) -> tuple:
        """The trained model's loss against t (where the denoiser finds the task hard)."""
        model, _ = _model(session)
        with user_errors():
            ts, loss = studio.playground.loss_by_t(model)
            alpha_bar = studio.playground.alpha_bar(model.config)
        hard, easy = int(ts[int(np.argmax(loss))]), int(ts[int(np.argmin(loss))])
        return loss_by_t_figure(ts, loss, alpha_bar), (
            f"Hardest near $t = {hard}$ (loss {loss.max():.3f}): with almost no noise in $x_t$, the noise cannot be told "
            f"from the data's own spread. Easiest near $t = {easy}$ (loss {loss.min():.3f}): $x_t$ is nearly all noise, "
            "so $\\epsilon \\approx x_t$. A loss of 1 is what predicting zero scores.")

    return one_step(studio.runner, playground_loss)


def make_playground_exports(studio: Studio, exports: ExportDir):
    def playground_export(session: PlaygroundSession | None) -> str:
        """The trained model as a zipped diffusers folder (denoiser + scheduler + recipe + metrics)."""
        model, _ = _model(session)
        with user_errors():
            return str(studio.playground.export(model, exports.path("point-model.zip").parent))

    def playground_animation(session: PlaygroundSession | None, fmt: str) -> str:
        """The last sampling run as an animation to download, ``fmt`` gif or mp4."""
        run = _run(session)
        if fmt not in ("gif", "mp4"):
            raise gr.Error("choose the format gif or mp4")
        with user_errors():
            return str(write_animation(run_frames(run.x_t, session.data), exports.path(f"reverse.{fmt}"), fps=12))

    def playground_recipe(session: PlaygroundSession | None) -> str:
        """The training recipe: ``python -m diffusion.training.train_points --recipe FILE`` replays it."""
        model, _ = _model(session)
        path = exports.path("point-recipe.json")
        path.write_text(model.config.to_json())
        return str(path)

    return playground_export, playground_animation, playground_recipe


# ----- the tab -----
def build_playground_tab(studio: Studio, budget: StateBudget, exports: ExportDir) -> gr.Tabs:
    """The tab; returns its views (tabs with ids "pg-reverse", "pg-forward", ...) for lessons to open."""
    default = PointConfig()
    # ----- layout -----
    gr.Markdown(PLAYGROUND, latex_delimiters=LATEX)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            dataset = gr.Dropdown([(title, key) for key, title in POINT_DATASETS.items()], value=default.dataset,
                                  label="Data", elem_id="pg-data")
            word = gr.Textbox(value="DDPM", label=f"Word (the word data set; at most {MAX_WORD_CHARS} characters)",
                              max_length=MAX_WORD_CHARS)
            with gr.Accordion("Your drawing (the drawing data set)", open=False):
                drawing = CheckedSketchpad(type="numpy", image_mode="RGB", canvas_size=(256, 256), height=300,
                                       brush=gr.Brush(colors=["#000000"], default_color="#000000", default_size=6),
                                       label="Draw a shape in black", elem_id="pg-drawing")
            with gr.Row():
                schedule = gr.Radio(["cosine", "linear"], value=default.schedule, label="Noise schedule")
                timesteps = gr.Dropdown(list(TIMESTEP_CHOICES), value=default.num_train_timesteps, label="T")
            steps = gr.Slider(100, MAX_TRAIN_STEPS, value=default.steps, step=100, label="Training steps",
                              elem_id="pg-steps")
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            with gr.Row():
                train = gr.Button("Train", variant="primary", scale=3, elem_id="pg-train")
                stop = gr.Button("Stop", variant="stop", scale=1)
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="pg-status")
            with gr.Row():
                loss = gr.LinePlot(x="step", y="loss", title="Training loss (moving average of 50 steps)",
                                   y_title="loss", height=340, elem_id="pg-loss")
                cloud = gr.Image(label="Samples (blue) over the data (grey)", elem_id="pg-cloud", **CLOUD)
    session = gr.State(None, time_to_live=budget.ttl_s, delete_callback=budget.discard)
    with gr.Tabs(elem_id="pg-views") as views:
        with gr.Tab("Reverse process", id="pg-reverse"):
            with gr.Row():
                sampler = gr.Dropdown([(SAMPLERS[s].title, s) for s in SAMPLERS_HERE], value="ddpm", label="Sampler")
                sample_steps = gr.Slider(1, max(TIMESTEP_CHOICES), value=100, step=1, label="Steps (at most T)")
                particles = gr.Slider(10, MAX_POINTS, value=1000, step=10, label="Particles")
                sample_seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                eta = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="eta (DDIM)")
            sample = gr.Button("Sample: noise to data", variant="primary", elem_id="pg-sample")
            sample_status = gr.Markdown(elem_id="pg-sample-status")
            with gr.Row():
                animation = gr.Image(label="The reverse process (animation)", type="filepath", elem_id="pg-animation",
                                     **CLOUD)
                with gr.Column():
                    frame = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False, elem_id="pg-frame")
                    frame_image = gr.Image(label="One frame", elem_id="pg-frame-image", **CLOUD)
                    frame_note = gr.Markdown(latex_delimiters=LATEX)
            with gr.Row():
                fmt = gr.Radio(["gif", "mp4"], value="gif", label="Animation format")
                animate = gr.Button("Download the animation")
                export = gr.Button("Download the model (diffusers folder, zip)")
                recipe = gr.Button("Download the training recipe (JSON)")
            download = gr.File(label="Download", interactive=False)
        with gr.Tab("Forward process", id="pg-forward"):
            forward = gr.Button("Show the forward process of the data")
            strip = gr.Image(label="q(x_t | x_0) at six t from 0 to T - 1", format="png", interactive=False,
                             elem_id="pg-forward-strip")
            forward_animation = gr.Image(label="The forward process: data to noise (animation)", type="filepath",
                                         elem_id="pg-forward-animation", **CLOUD)
            forward_note = gr.Markdown(latex_delimiters=LATEX)
        with gr.Tab("Noise field and score", id="pg-field"):
            gr.Markdown(SCORE, latex_delimiters=LATEX)
            with gr.Row():
                field_t = gr.Slider(0, max(TIMESTEP_CHOICES) - 1, value=10, step=1, label="t (at most T - 1)")
                as_score = gr.Checkbox(False, label="Scale as the score (divide by sqrt(1 - alpha-bar_t))")
                show_field = gr.Button("Show the field")
            field_plot = LockedPlot(label="The learned field", elem_id="pg-field-plot")
            field_note = gr.Markdown(latex_delimiters=LATEX)
        with gr.Tab("DDPM against DDIM paths", id="pg-paths"):
            gr.Markdown(PATHS, latex_delimiters=LATEX)
            with gr.Row():
                path_count = gr.Slider(1, MAX_PATHS, value=4, step=1, label="Particles")
                path_seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                path_steps = gr.Slider(2, 200, value=50, step=1, label="Steps")
                show_paths = gr.Button("Draw the paths")
            paths_plot = LockedPlot(label="Paths of the same starting points", elem_id="pg-paths-plot")
        with gr.Tab("Loss against t", id="pg-loss-t"):
            show_loss = gr.Button("Measure the loss at 20 values of t (fresh data)")
            loss_plot = LockedPlot(label="Where denoising is easy and where it is hard")
            loss_note = gr.Markdown(latex_delimiters=LATEX)
        with gr.Tab("Snapshots", id="pg-snapshots"):
            gr.Markdown("Samples of the model as it was after 100, 300 and 1,000 steps of training, and at the end, "
                        "each with its distance to fresh data: first the overall spread, then the shape, then the detail.")
            snapshots = gr.Gallery(label="Under-trained to trained", columns=4, height="auto", elem_id="pg-snapshots")
    # ----- events -----
    form = [dataset, word, drawing, schedule, timesteps]
    training = train.click(make_playground_train(studio, budget), inputs=[*form, steps, seed],
                           outputs=[session, status, loss, cloud, snapshots], api_name="playground_train",
                           **MODEL_CONCURRENCY)
    stop.click(None, cancels=[training], api_visibility="private")
    sample.click(make_playground_sample(studio, budget, exports),
                 inputs=[session, sampler, sample_steps, particles, sample_seed, eta],
                 outputs=[session, animation, frame, frame_image, frame_note, sample_status],
                 api_name="playground_sample", **MODEL_CONCURRENCY)
    frame.change(playground_show, inputs=[session, frame], outputs=[frame_image, frame_note], api_name="playground_show",
                 show_progress="hidden")
    forward.click(make_playground_forward(studio, exports), inputs=[*form, seed],
                  outputs=[strip, forward_animation, forward_note],
                  api_name="playground_forward", **MODEL_CONCURRENCY)
    show_field.click(make_playground_field(studio), inputs=[session, field_t, as_score], outputs=[field_plot, field_note],
                     api_name="playground_field", **MODEL_CONCURRENCY)
    show_paths.click(make_playground_paths(studio), inputs=[session, path_count, path_seed, path_steps],
                     outputs=paths_plot, api_name="playground_paths", **MODEL_CONCURRENCY)
    show_loss.click(make_playground_loss(studio), inputs=session, outputs=[loss_plot, loss_note],
                    api_name="playground_loss", **MODEL_CONCURRENCY)
    playground_export, playground_animation, playground_recipe = make_playground_exports(studio, exports)
    export.click(playground_export, inputs=session, outputs=download, api_name="playground_export")
    animate.click(playground_animation, inputs=[session, fmt], outputs=download, api_name="playground_animation")
    recipe.click(playground_recipe, inputs=session, outputs=download, api_name="playground_recipe")
    return views
