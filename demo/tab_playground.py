"""Tab: the playground. A diffusion model trained live on 2-D points (Algorithm 1), then sampled through the
same loop as the image models, with views of what it learned: the reverse and forward processes of the
particle cloud, the noise field and its score reading, DDPM against DDIM paths, the loss against t, and
snapshots taken during training. Every handler is named after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from demo.common import (
    LATEX,
    MODEL_CONCURRENCY,
    CheckedSketchpad,
    LockedPlot,
    Shown,
    one_step,
    shown,
    user_errors,
)
from demo.figures import field_figure, loss_by_t_figure, paths_figure
from demo.playground_runs import (
    PlaygroundSession,
    config_from_form,
    make_playground_sample,
    make_playground_train,
    playground_show,
    session_model,
    session_run,
)
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
    NoiseField,
    PointConfig,
    StateBudget,
    Studio,
    cloud_picture,
    make_grid,
    run_frames,
    write_animation,
)

CLOUD = {"format": "png", "interactive": False, "height": 380, "buttons": ["download", "fullscreen"]}


# ----- the other views (training and sampling: demo.playground_runs) -----
def make_playground_forward(studio: Studio, exports: ExportDir):
    def playground_forward(dataset: str, word: str, drawing: dict | None, schedule: str, timesteps: float,
                           seed: float) -> Shown:
        """The forward process on the chosen 2-D data: the points at several timesteps of ``schedule`` with ``timesteps`` steps."""
        with user_errors():  # checked here; the clouds are the job's one step, the pictures are drawn after it
            config = config_from_form(studio, dataset, word, drawing, schedule, timesteps, 1, seed)
            T = config.num_train_timesteps
            shown_t = studio.playground.forward(config, seed=seed)
            frames_t = studio.playground.forward(config, timesteps=sorted({round(t) for t in np.linspace(0, T - 1, 40)}),
                                                 seed=seed)

        def clouds(shown_t: Iterator, frames_t: Iterator) -> Iterator[tuple]:
            with user_errors():
                (ts, alpha_bar, strip_clouds), (_, _, frames) = next(shown_t), next(frames_t)
            yield cloud_panels(ts, alpha_bar, strip_clouds, frames, exports)

        return Shown((shown_t, frames_t), clouds)

    return one_step(studio.runner, playground_forward)


def cloud_panels(ts: list[int], alpha_bar: np.ndarray, clouds: np.ndarray, frames: np.ndarray,
                   exports: ExportDir) -> tuple:
    """The forward process's strip of clouds, its animation (a GIF in ``exports``) and its note."""
    gif = write_animation([cloud_picture(c) for c in frames] + [cloud_picture(frames[-1])] * 8,
                          exports.path("forward.gif"), fps=12)
    strip = make_grid(np.stack([cloud_picture(c, side=240) for c in clouds]), ncols=len(clouds))
    note = " · ".join(f"$t = {t}$: $\\bar\\alpha_t = {a:.3f}$" for t, a in zip(ts, alpha_bar, strict=True))
    return strip, str(gif), (f"$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon$ (Ho et al. 2020, Eq. 4), "
                             f"one $\\epsilon$ for all panels: {note}. At $t = T - 1$ the cloud is a standard Gaussian.")


def make_playground_field(studio: Studio):
    def playground_field(session: PlaygroundSession | None, timestep: float, score: bool) -> Shown:
        """The trained model's predicted noise (or score) as arrows over the plane at ``timestep``."""
        model, data = session_model(session)
        with user_errors():
            fields = studio.playground.field(model, timestep, 21)  # checked here

        def panels(field: NoiseField) -> tuple:
            norms = np.linalg.norm(field.score, axis=-1)
            note = (f"$t = {field.timestep}$, $\\bar\\alpha_t = {field.alpha_bar:.4f}$: score "
                    f"$= -\\epsilon_\\theta / \\sqrt{{1-\\bar\\alpha_t}} = -\\epsilon_\\theta / {np.sqrt(1 - field.alpha_bar):.4f}$; "
                    f"its length on the grid: median {np.median(norms):.2f}, largest {norms.max():.2f}.")
            return field_figure(field, data[:1000], EXTENT, bool(score)), note

        return shown(fields, panels)  # the figure: off the model thread

    return one_step(studio.runner, playground_field)


def make_playground_paths(studio: Studio):
    def playground_paths(session: PlaygroundSession | None, particles: float, seed: float,
                         steps: float) -> Shown:
        """The paths ``particles`` points take from noise to data in ``steps`` DDIM steps (eta 0) with ``seed``."""
        model, data = session_model(session)
        with user_errors():
            paths = studio.playground.paths(model, particles, seed, steps)  # checked here
        return shown(paths, lambda run: paths_figure(run, data[:1000], EXTENT))  # off the model thread

    return one_step(studio.runner, playground_paths)


def make_playground_loss(studio: Studio):
    def playground_loss(session: PlaygroundSession | None) -> Shown:
        """The trained model's loss against t (where the denoiser finds the task hard)."""
        model, _ = session_model(session)
        with user_errors():
            losses = studio.playground.loss_by_t(model)
            alpha_bar = studio.playground.alpha_bar(model.config)

        def panels(measured: tuple[np.ndarray, np.ndarray]) -> tuple:
            ts, loss = measured
            hard, easy = int(ts[int(np.argmax(loss))]), int(ts[int(np.argmin(loss))])
            note = (
                f"Hardest near $t = {hard}$ (loss {loss.max():.3f}): with almost no noise in $x_t$, the noise cannot be told "
                f"from the data's own spread. Easiest near $t = {easy}$ (loss {loss.min():.3f}): $x_t$ is nearly all noise, "
                "so $\\epsilon \\approx x_t$. A loss of 1 is what predicting zero scores.")
            return loss_by_t_figure(ts, loss, alpha_bar), note

        return shown(losses, panels)  # the figure: off the model thread

    return one_step(studio.runner, playground_loss)


def make_playground_exports(studio: Studio, exports: ExportDir):
    def playground_export(session: PlaygroundSession | None) -> str:
        """The trained model as a zipped diffusers folder (denoiser + scheduler + recipe + metrics)."""
        model, _ = session_model(session)
        with user_errors():
            return str(studio.playground.export(model, exports.path("point-model.zip").parent))

    def playground_animation(session: PlaygroundSession | None, fmt: str) -> str:
        """The last sampling run as an animation to download, ``fmt`` gif or mp4."""
        run = session_run(session)
        if fmt not in ("gif", "mp4"):
            raise gr.Error("choose the format gif or mp4")
        with user_errors():
            return str(write_animation(run_frames(run.x_t, session.data), exports.path(f"reverse.{fmt}"), fps=12))

    def playground_recipe(session: PlaygroundSession | None) -> str:
        """The training recipe: ``python -m diffusion.training.train_points --recipe FILE`` replays it."""
        model, _ = session_model(session)
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
