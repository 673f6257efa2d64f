"""Tab 2: the step-by-step lab.

Views over one model: the reverse process (triptych, live equation of the chosen sampler
with the step's numbers, play/pause, GIF/MP4/recipe export), the guidance decomposition
and the cross-attention maps per token (text models), the forward process on the user's
image with SDEdit ("denoise from here"), the sampler race, and the noise schedules compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from demo.common import (  # noqa: E402
    LATEX,
    MODEL_CONCURRENCY,
    FIGURE_LOCK,
    CheckedImage,
    LockedPlot,
    Tick,
    as_float,
    as_int,
    as_seed,
    streamed,
    user_errors,
)
from demo.tab_sampling import SAMPLER_CHOICES  # noqa: E402
from demo.theory import ATTENTION, FORWARD, GUIDANCE, STEPS  # noqa: E402
from diffusion.budget import StateBudget  # noqa: E402
from diffusion.explain import StepTerms, step_terms, update_latex  # noqa: E402
from diffusion.images import IMAGE_LIMITS  # noqa: E402
from diffusion.export import PANELS, ExportDir, trajectory_frames, write_animation  # noqa: E402
from diffusion.pipeline import SampleRequest, make_grid  # noqa: E402
from diffusion.loading import precision_name  # noqa: E402
from diffusion.recipe import make_recipe  # noqa: E402
from diffusion.registry import ASSETS  # noqa: E402
from diffusion.service import (  # noqa: E402
    MAX_TRAJECTORY_IMAGES,
    RACE_LEVELS,
    ScheduleCurves,
    Studio,
    Trajectory,
    attention_overlays,
    race_grid,
    race_milestones,
    trajectory_nbytes,
)

MAX_VIEW_STEPS = 1000
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0, 7.0, 10.0)
EXAMPLES = sorted(str(p) for p in (ASSETS / "examples").glob("*.png"))


@dataclass
class StepsSession:
    """Per-user state: the recorded trajectory, the sampler's per-step update and the recipe.

    Held under the app's :class:`StateBudget`, which may ``release`` it (expired, or memory needed
    for newer runs): the trajectory is dropped and the user is told to run again.
    """

    model_id: str
    trajectory: Trajectory | None
    curves: ScheduleCurves
    sampler: str
    terms: list[StepTerms]
    recipe_json: str
    released: str | None = None  # why the run was released, once it was

    def release(self, reason: str) -> None:
        self.trajectory, self.terms, self.released = None, [], reason


# ---------------------------------------------------------------------------- figures

def schedule_figure(curves: ScheduleCurves, timestep: float | None,
                    family: dict[str, ScheduleCurves] | None = None) -> Figure:
    """beta_t, alpha-bar_t and log-SNR(t): the model's schedule (thick), the classic ones (thin),
    the current step marked."""
    with FIGURE_LOCK:
        return _schedule_figure(curves, timestep, family)


def _schedule_figure(curves: ScheduleCurves, timestep: float | None,
                     family: dict[str, ScheduleCurves] | None) -> Figure:
    fig = Figure(figsize=(10, 2.7), dpi=90)  # no pyplot: its global figure list is not thread-safe
    axes = fig.subplots(1, 3)
    series = [("betas", r"$\beta_t$"), ("alphas_cumprod", r"$\bar\alpha_t$ (signal kept)"),
              ("log_snr", r"log SNR$(t)=\log\,\bar\alpha_t/(1-\bar\alpha_t)$")]
    for ax, (attr, title) in zip(axes, series, strict=True):
        for name, other in (family or {}).items():
            ax.plot(other.timesteps, getattr(other, attr), lw=1, alpha=0.7, label=name)
        ax.plot(curves.timesteps, getattr(curves, attr), color="black", lw=2.2, label="this model")
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        if timestep is not None:
            ax.axvline(timestep, color="crimson", lw=1.5)
    if family:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- handlers

def make_run_handler(studio: Studio, budget: StateBudget):
    @streamed
    def run_steps(model_id: str, sampler: str, steps: float, seed: float, prompt: str,
                  guidance: float, images: float = 1) -> Iterator[tuple]:
        with user_errors():
            card = studio.card(str(model_id))
            text = card.kind == "latent-text"
            request = SampleRequest(
                sampler=str(sampler), steps=as_int(steps, "Steps", 1, MAX_VIEW_STEPS), n=1, seed=as_seed(seed),
                prompt=str(prompt or "") if text else "",
                guidance_scale=as_float(guidance, "Guidance", 0.0, 30.0) if text else 1.0,
            )
            count = as_int(images, "Images", 1, MAX_TRAJECTORY_IMAGES)
            studio.validate(card.id, request)
            curves = studio.schedule(card.id)
            model = studio.load(card.id)
            terms = step_terms(request.sampler, model.scheduler_config, request.steps, request.eta)
            recipe = make_recipe(card.id, request, model.scheduler_config,
                                 precision_name(model.autocast_dtype)).to_json()
            for done, total, traj in studio.trajectory(card.id, request, images=count):
                view = traj.steps[-1]
                if done < total:  # every step is yielded; the browser gets one every STREAM_EVERY_S
                    yield Tick((gr.skip(), gr.skip(), view.x_t, view.noise, view.pred_x0, view.latents, gr.skip(),
                                gr.skip(), f"Running: step {done}/{total}, {traj.wall_s:.1f} s"))
            session = StepsSession(card.id, traj, curves, request.sampler, terms, recipe)
            budget.admit(session, trajectory_nbytes(traj))
            last = traj.steps[-1]
            yield (session, gr.Slider(minimum=1, maximum=total, value=total, step=1, interactive=True),
                   last.x_t, last.noise, last.pred_x0, last.latents, schedule_figure(curves, last.timestep),
                   update_latex(terms[-1]),
                   f"Done: {total} steps in {traj.wall_s:.2f} s. Drag the slider (or press Play) to revisit "
                   "any step.")

    return run_steps


def _session(session: StepsSession | None) -> StepsSession:
    """The user's run, or a ``gr.Error`` that says to run (again)."""
    if session is None:
        raise gr.Error("Run the reverse process first (a run is kept for a limited time, then run it again).")
    if session.trajectory is None:
        raise gr.Error(f"Your step-lab run was released because {session.released}: run the reverse process again.")
    return session


def show_step(session: StepsSession | None, step: float) -> tuple:
    """Show recorded step ``step`` (1-based) of the user's trajectory."""
    session = _session(session)
    steps = session.trajectory.steps
    index = as_int(step, "Step", 1, len(steps)) - 1
    view = steps[index]
    return (view.x_t, view.noise, view.pred_x0, view.latents, schedule_figure(session.curves, view.timestep),
            update_latex(session.terms[index]))


def play(session: StepsSession | None, step: float) -> tuple:
    """Start the animation (from the first step when at the end)."""
    session = _session(session)
    start = 1 if int(step) >= len(session.trajectory.steps) else int(step)
    return gr.Timer(active=True), start


def pause() -> gr.Timer:
    return gr.Timer(active=False)


def advance(session: StepsSession | None, step: float) -> tuple:
    """One animation tick: the next step; the timer stops at the last one."""
    if session is None or session.trajectory is None:
        return gr.Timer(active=False), gr.skip()
    total = len(session.trajectory.steps)
    stride = max(1, total // 100)  # long runs play in about 100 ticks
    nxt = min(total, int(step) + stride)
    return gr.Timer(active=nxt < total), nxt


def make_export_handlers(exports: ExportDir):
    """The two downloads, written under the app's one temporary folder (nothing is created on refusal)."""

    def export_animation(session: StepsSession | None, panel: str, fmt: str) -> str:
        """The trajectory's chosen panel as a GIF or MP4 file to download."""
        session = _session(session)
        if panel not in PANELS or fmt not in ("gif", "mp4"):
            raise gr.Error(f"choose a panel in {PANELS} and a format gif or mp4")
        with user_errors():
            frames = trajectory_frames(session.trajectory.steps, panel)
            return str(write_animation(frames, exports.path(f"trajectory.{fmt}"), fps=12))

    def export_recipe(session: StepsSession | None) -> str:
        """The run's JSON recipe: ``python -m diffusion.sample --recipe FILE`` replays it."""
        recipe = _session(session).recipe_json
        path = exports.path("recipe.json")
        path.write_text(recipe)
        return str(path)

    return export_animation, export_recipe


def make_guidance_handler(studio: Studio):
    def decompose(session: StepsSession | None, step: float) -> tuple:
        session = _session(session)
        index = as_int(step, "Step", 1, len(session.trajectory.steps)) - 1
        view = session.trajectory.steps[index]
        with user_errors():
            result = studio.guidance_view(session.model_id, view, GUIDANCE_SCALES)
        gallery = [(img, f"w = {w:g}") for w, img in zip(result.scales, result.pred_x0, strict=True)]
        note = (f"Step {index + 1}, $t = {view.timestep:.0f}$: RMS of the guidance direction "
                f"$\\epsilon_\\theta(z_t, y) - \\epsilon_\\theta(z_t, \\varnothing)$ = {result.direction_norm:.4f}. "
                f"The run used $w = {view.guidance.guidance_scale:g}$; all scales come from one cached pair"
                + (" (of the first image)." if session.trajectory.request.n > 1 else "."))
        return result.uncond, result.text, result.direction, gallery, note

    return decompose


def show_attention(session: StepsSession | None, step: float, layers: str | None) -> tuple:
    """Cross-attention per prompt token at recorded step ``step`` (1-based), over its predicted x0."""
    if session is None:
        return [], gr.skip(), "Run the reverse process with a text model to see its cross-attention."
    traj = _session(session).trajectory
    if traj.tokens is None or traj.attention_layers is None:
        why = ("Cross-attention maps are recorded for runs of one image: set Images to 1 and run again."
               if traj.request.n > 1 and traj.steps and traj.steps[0].latents is not None else
               "This model has no cross-attention (pixel models are unconditional): choose a text model and run.")
        return [], gr.Dropdown(choices=["all"], value="all"), why
    index = as_int(step, "Step", 1, len(traj.steps)) - 1
    choices = ["all", *traj.attention_layers]
    missing = layers not in choices
    layers = "all" if missing else str(layers)
    view = traj.steps[index]
    with user_errors():
        gallery = attention_overlays(view, traj.tokens, layers)
    counts = ", ".join(f"{res}: {n}" for res, n in traj.attention_layers.items())
    note = (f"Step {index + 1} of {len(traj.steps)}, $t = {view.timestep:.0f}$; layers averaged: "
            f"{'all (' + counts + ')' if layers == 'all' else layers}. Shares of all tokens sum to 100%.")
    if missing:
        note += " (This model has no layers at that resolution: showing all.)"
    return gallery, gr.Dropdown(choices=choices, value=layers), note


def make_forward_handler(studio: Studio):
    def forward(model_id: str, image: np.ndarray | None, timestep: float, seed: float) -> tuple:
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            t = as_int(timestep, "t", 0, MAX_VIEW_STEPS - 1)
            view = studio.forward(str(model_id), image, t, as_seed(seed))
        text = (f"$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon = "
                f"{view.signal_coef:.4f}\\,x_0 + {view.noise_coef:.4f}\\,\\epsilon$ at $t = {view.timestep}$ "
                f"($\\bar\\alpha_t = {view.alpha_prod_t:.5f}$); std of $x_t$ = {view.x_t_std:.3f} "
                f"(of $x_0$: {view.x0_std:.3f}).")
        if view.reconstruction_psnr is not None:
            text += f" Autoencoder reconstruction of the image: PSNR {view.reconstruction_psnr:.1f} dB."
        return view.x0, view.x_t, view.latents, text

    return forward


def make_sdedit_handler(studio: Studio):
    @streamed
    def denoise_from_here(model_id: str, image: np.ndarray | None, timestep: float, sampler: str, steps: float,
                          seed: float, prompt: str, guidance: float) -> Iterator[tuple]:
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            card = studio.card(str(model_id))
            text = card.kind == "latent-text"
            request = SampleRequest(
                sampler=str(sampler), steps=as_int(steps, "Steps", 1, MAX_VIEW_STEPS), n=4, seed=as_seed(seed),
                prompt=str(prompt or "") if text else "",
                guidance_scale=as_float(guidance, "Guidance", 0.0, 30.0) if text else 1.0)
            t = as_int(timestep, "t", 0, MAX_VIEW_STEPS - 1)
            for update in studio.generate(card.id, request, previews=10, init_image=image, start_timestep=t):
                if update.done:
                    yield update.grid, (f"SDEdit from $t = {t}$: {update.num_steps} of {request.steps} "
                                        f"{request.sampler} steps, 4 seeds, {update.wall_s:.2f} s.")
                elif update.preview is not None:
                    yield update.preview, f"Denoising: step {update.step}/{update.num_steps}"
                else:  # every step is yielded, so a cancelled run stops within one step (``streamed``)
                    yield Tick((gr.skip(), f"Denoising: step {update.step}/{update.num_steps}"))

    return denoise_from_here


def make_race_handler(studio: Studio):
    @streamed
    def race(model_id: str, seed: float, prompt: str, guidance: float) -> Iterator[tuple]:
        with user_errors():
            card = studio.card(str(model_id))
            text = card.kind == "latent-text"
            request = SampleRequest(seed=as_seed(seed), prompt=str(prompt or "") if text else "",
                                    guidance_scale=as_float(guidance, "Guidance", 0.0, 30.0) if text else 1.0)
            shown = None
            for lanes in studio.race(card.id, request):
                if race_milestones(lanes) == shown:
                    yield Tick((gr.skip(), gr.skip()))  # one step on, nothing new to draw (a cancel stops here)
                    continue
                shown = race_milestones(lanes)
                rows = ["| sampler | steps | model calls | wall time | |", "|---|---|---|---|---|"]
                rows += [f"| {lane.sampler} | {lane.steps} | {lane.model_calls} | {lane.wall_s:.2f} s | "
                         f"{'done' if lane.done else ('running' if lane.model_calls else 'waiting')} |"
                         for lane in lanes]
                yield race_grid(lanes), "\n".join(rows)

    return race


def make_schedule_handler(studio: Studio):
    def schedules(model_id: str, timestep: float, image: np.ndarray | None, seed: float) -> tuple:
        with user_errors():
            curves = studio.schedule(str(model_id))
            t = as_int(timestep, "t", 0, len(curves.timesteps) - 1)
            figure = schedule_figure(curves, t, studio.schedule_family(len(curves.timesteps)))
            strip = None
            if image is not None:
                ts = np.linspace(0, len(curves.timesteps) - 1, 6).round().astype(int)
                frames = studio.forward_strip(str(model_id), image, [int(s) for s in ts], as_seed(seed))
                strip = make_grid(frames, ncols=len(frames))
        return figure, strip

    return schedules


# ---------------------------------------------------------------------------- layout

def build_steps_tab(studio: Studio, budget: StateBudget, exports: ExportDir) -> None:
    cards = studio.cards()
    default = studio.cards("pixel")[0]
    panel = {"format": "png", "interactive": False, "height": 240, "elem_classes": ["pixelated"],
             "buttons": ["download", "fullscreen"]}
    # ----- layout -----
    # per-user runs, bounded across users by ``budget`` and expired by gradio after the same time-to-live
    session = gr.State(None, time_to_live=budget.ttl_s, delete_callback=budget.discard)
    gr.Markdown(STEPS, latex_delimiters=LATEX)
    with gr.Row():
        model = gr.Dropdown([(c.title, c.id) for c in cards], value=default.id, label="Model", scale=2,
                            elem_id="steps-model")
        sampler = gr.Dropdown(SAMPLER_CHOICES, value="ddpm", label="Sampler", scale=1)
        steps = gr.Slider(1, MAX_VIEW_STEPS, value=50, step=1, label="Steps", scale=2)
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=1)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt (text models only)", scale=3, elem_id="steps-prompt")
        guidance = gr.Slider(0.0, 15.0, value=4.0, step=0.5, label="Guidance (text models)", scale=1)
        images = gr.Slider(1, MAX_TRAJECTORY_IMAGES, value=1, step=1, label="Images (seeds side by side)", scale=1)
    with gr.Tabs():
        with gr.Tab("Reverse process", id="reverse"):
            with gr.Row():
                run = gr.Button("Run the reverse process", variant="primary", scale=2)
                play_btn = gr.Button("▶ Play", scale=1, elem_id="steps-play")
                pause_btn = gr.Button("Pause", scale=1)
                stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="steps-stop")
            status = gr.Markdown(elem_id="steps-status")
            slider = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False, elem_id="steps-slider")
            with gr.Row():
                x_t = gr.Image(label="x_t", elem_id="steps-xt", **panel)
                noise = gr.Image(label="predicted noise ε_θ(x_t, t)", **panel)
                x0 = gr.Image(label="predicted x0", elem_id="steps-x0", **panel)
            latents = gr.Image(label="latent channels of x_t (latent models, first image; each channel in [-3, 3])",
                               format="png", interactive=False, height=90, elem_classes=["pixelated"])
            equation = gr.Markdown(latex_delimiters=LATEX, elem_id="steps-equation")
            plot = LockedPlot(label="Noise schedule")
            with gr.Accordion("Export: animation and recipe", open=False):
                with gr.Row():
                    export_panel = gr.Radio(list(PANELS), value="triptych", label="Panel")
                    export_format = gr.Radio(["gif", "mp4"], value="gif", label="Format")
                    export_btn = gr.Button("Make animation")
                    recipe_btn = gr.Button("Recipe (JSON)")
                export_file = gr.File(label="Download", interactive=False)
        with gr.Tab("Guidance", id="guidance"):
            gr.Markdown(GUIDANCE, latex_delimiters=LATEX)
            decompose_btn = gr.Button("Decompose the current step (text models, guidance > 1)")
            with gr.Row():
                g_uncond = gr.Image(label="ε(z_t, ∅) unconditional", **panel)
                g_text = gr.Image(label="ε(z_t, y) conditional", **panel)
                g_dir = gr.Image(label="guidance direction ε(z_t, y) − ε(z_t, ∅)", **panel)
            g_gallery = gr.Gallery(label="predicted x0 for each guidance scale w", columns=6, height=220,
                                   elem_classes=["pixelated"])
            g_note = gr.Markdown(latex_delimiters=LATEX)
        with gr.Tab("Cross-attention", id="attention"):
            gr.Markdown(ATTENTION, latex_delimiters=LATEX)
            # a dropdown that accepts any value: each run offers its own model's resolutions
            a_layers = gr.Dropdown(["all"], value="all", label="Layers (feature-map resolution)",
                                   allow_custom_value=True, elem_id="attention-layers")
            a_gallery = gr.Gallery(label="attention per token over the step's predicted x0", columns=6,
                                   height="auto", elem_classes=["pixelated"], elem_id="attention-gallery")
            a_note = gr.Markdown(latex_delimiters=LATEX, elem_id="attention-note")
        with gr.Tab("Forward process and SDEdit", id="forward"):
            gr.Markdown(FORWARD, latex_delimiters=LATEX)
            with gr.Row():
                with gr.Column(scale=1):
                    source = CheckedImage(label=f"Your image (cropped and resized to the model; at most {IMAGE_LIMITS})",
                                          type="numpy", sources=["upload", "clipboard"], height=200,
                                          elem_id="forward-image")
                    gr.Examples([[p] for p in EXAMPLES], inputs=[source], label="Examples from assets/")
                    t_slider = gr.Slider(0, MAX_VIEW_STEPS - 1, value=250, step=1, label="t (noise level)",
                                         elem_id="forward-t")
                    sdedit_btn = gr.Button("Denoise from here (SDEdit)", variant="primary")
                with gr.Column(scale=2):
                    with gr.Row():
                        f_x0 = gr.Image(label="x_0 as the model sees it", **panel)
                        f_xt = gr.Image(label="x_t ~ q(x_t | x_0)", elem_id="forward-xt", **panel)
                    f_latents = gr.Image(label="latent channels of x_t (latent models)", format="png",
                                         interactive=False, height=90, elem_classes=["pixelated"])
                    f_text = gr.Markdown(latex_delimiters=LATEX, elem_id="forward-text")
                    f_result = gr.Image(label="SDEdit results (4 seeds)", format="png", interactive=False,
                                        height=240, elem_classes=["pixelated"], elem_id="forward-result")
                    f_status = gr.Markdown()
        with gr.Tab("Sampler race", id="race"):
            gr.Markdown("One seed, one model, four samplers: DDPM with 1,000 steps, DDIM 50, DPM-Solver++ 20 and "
                        "Euler 30. Each row shows the predicted $\\hat x_0$ at the step whose noise level "
                        "($\\bar\\alpha_t$, columns from "
                        + ", ".join(f"{v:g}" for v in RACE_LEVELS) + ") is nearest: aligned by noise, not by "
                        "step index. The fast samplers run first; DDPM streams while the others are shown.",
                        latex_delimiters=LATEX)
            race_btn = gr.Button("Race the samplers", variant="primary")
            race_img = gr.Image(label="predicted x0 by sampler (rows) and noise level (columns)", format="png",
                                interactive=False, height=300, elem_classes=["pixelated"], elem_id="race-grid")
            race_table = gr.Markdown(elem_id="race-table")
        with gr.Tab("Schedules", id="schedules"):
            gr.Markdown("The model's own schedule (black) against DDPM's linear, Stable Diffusion's scaled-linear "
                        "and the cosine schedule (Nichol & Dhariwal 2021); the red line is the forward lab's $t$. "
                        "The strip shows the forward lab's image at six evenly spaced $t$.", latex_delimiters=LATEX)
            s_btn = gr.Button("Compare the schedules")
            s_plot = LockedPlot(label="Schedules")
            s_strip = gr.Image(label="q(x_t | x_0) at t = 0 … T", format="png", interactive=False, height=120,
                               elem_classes=["pixelated"])
    timer = gr.Timer(0.25, active=False)
    # ----- events -----
    run_event = run.click(make_run_handler(studio, budget), inputs=[model, sampler, steps, seed, prompt, guidance, images],
                          outputs=[session, slider, x_t, noise, x0, latents, plot, equation, status],
                          api_name="steps_run", **MODEL_CONCURRENCY)
    # a new run whose last step has the same number as the slider's fires no .change: refresh the maps
    run_event.then(show_attention, inputs=[session, slider, a_layers], outputs=[a_gallery, a_layers, a_note],
                   api_visibility="private", show_progress="hidden")
    slider.change(show_step, inputs=[session, slider], outputs=[x_t, noise, x0, latents, plot, equation],
                  api_name="steps_show", show_progress="hidden")
    slider.change(show_attention, inputs=[session, slider, a_layers], outputs=[a_gallery, a_layers, a_note],
                  api_name="steps_attention", show_progress="hidden")
    a_layers.input(show_attention, inputs=[session, slider, a_layers], outputs=[a_gallery, a_layers, a_note],
                   api_visibility="private", show_progress="hidden")
    play_btn.click(play, inputs=[session, slider], outputs=[timer, slider], api_visibility="private")
    pause_btn.click(pause, outputs=timer, api_visibility="private")
    stop_btn.click(None, cancels=[run_event], api_visibility="private")  # stops after the step in flight
    timer.tick(advance, inputs=[session, slider], outputs=[timer, slider], api_visibility="private",
               show_progress="hidden")
    export_animation, export_recipe = make_export_handlers(exports)
    export_btn.click(export_animation, inputs=[session, export_panel, export_format], outputs=export_file,
                     api_name="steps_export")
    recipe_btn.click(export_recipe, inputs=session, outputs=export_file, api_name="steps_recipe")
    decompose_btn.click(make_guidance_handler(studio), inputs=[session, slider],
                        outputs=[g_uncond, g_text, g_dir, g_gallery, g_note], api_name="steps_guidance",
                        **MODEL_CONCURRENCY)
    forward_inputs = [model, source, t_slider, seed]
    forward_outputs = [f_x0, f_xt, f_latents, f_text]
    forward = make_forward_handler(studio)
    t_slider.release(forward, inputs=forward_inputs, outputs=forward_outputs, api_name="forward_show",
                     **MODEL_CONCURRENCY)
    source.upload(forward, inputs=forward_inputs, outputs=forward_outputs, api_visibility="private",
                  **MODEL_CONCURRENCY)
    sdedit_btn.click(make_sdedit_handler(studio),
                     inputs=[model, source, t_slider, sampler, steps, seed, prompt, guidance],
                     outputs=[f_result, f_status], api_name="forward_denoise", **MODEL_CONCURRENCY)
    race_btn.click(make_race_handler(studio), inputs=[model, seed, prompt, guidance], outputs=[race_img, race_table],
                   api_name="race", **MODEL_CONCURRENCY)
    s_btn.click(make_schedule_handler(studio), inputs=[model, t_slider, source, seed], outputs=[s_plot, s_strip],
                api_name="schedules_show", **MODEL_CONCURRENCY)
