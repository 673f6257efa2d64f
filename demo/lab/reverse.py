"""The reverse-process view: run, step slider, play/pause, the update as pictures, exports, recipes and
shared links."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from demo.common import LATEX, MODEL_CONCURRENCY, user_errors
from demo.lab.recipes import SHARE_JS, lab_share, make_lab_load_recipe, make_lab_open_link, make_lab_replay
from demo.lab.run import lab_show, make_lab_run
from demo.lab.session import Controls, LabSession, PANEL, recorded_run
from diffusion.studio import (
    PANELS,
    ExportDir,
    StateBudget,
    Studio,
    trajectory_frames,
    write_animation,
)


def lab_play(session: LabSession | None, step: float) -> tuple:
    """Start the animation (from the first step when at the end)."""
    total = len(recorded_run(session).steps)
    return gr.Timer(active=True), 1 if int(step) >= total else int(step)


def lab_pause() -> gr.Timer:
    return gr.Timer(active=False)


def lab_tick(session: LabSession | None, step: float) -> tuple:
    """One animation tick: the next step; the timer stops at the last one."""
    if session is None or session.trajectory is None:
        return gr.Timer(active=False), gr.skip()
    total = len(session.trajectory.steps)
    stride = max(1, total // 100)  # long runs play in about 100 ticks
    nxt = min(total, int(step) + stride)
    return gr.Timer(active=nxt < total), nxt


def make_lab_exports(exports: ExportDir):
    """The two downloads, written under the app's one temporary folder (nothing is created on refusal)."""

    def lab_export(session: LabSession | None, panel: str, fmt: str) -> str:
        """The run's chosen panel as a GIF or MP4 file to download."""
        traj = recorded_run(session)
        if panel not in PANELS or fmt not in ("gif", "mp4"):
            raise gr.Error(f"choose a panel in {PANELS} and a format gif or mp4")
        with user_errors():
            frames = trajectory_frames(traj.steps, panel)
            return str(write_animation(frames, exports.path(f"trajectory.{fmt}"), fps=12))

    def lab_recipe(session: LabSession | None) -> str:
        """The run's JSON recipe: ``python -m diffusion.sample --recipe FILE`` replays it."""
        traj = recorded_run(session)
        path = exports.path("recipe.json")
        path.write_text(traj.recipe.to_json())
        return str(path)

    return lab_export, lab_recipe


def build_reverse(studio: Studio, budget: StateBudget, exports: ExportDir, c: Controls,
                  tabs: gr.Tabs) -> tuple[gr.Dependency, Callable[[gr.Textbox, gr.Button], None]]:
    """The reverse process, one step at a time; returns the run event (the other views follow it) and the wiring of
    a shared run's Open button (a pasted link, or the page's ``?run=``), which selects the step lab (one of the
    app's ``tabs``) and replays the run."""
    with gr.Row():
        run = gr.Button("Run the reverse process", variant="primary", scale=2)
        play = gr.Button("▶ Play", scale=1, elem_id="lab-play")
        pause = gr.Button("Pause", scale=1, elem_id="lab-pause")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="lab-stop")
    status = gr.Markdown(elem_id="lab-status")
    c.slider.render()
    with gr.Row():
        x_t = gr.Image(label="x_t", elem_id="lab-xt", **PANEL)
        noise = gr.Image(label="predicted noise ε_θ(x_t, t)", **PANEL)
        x0 = gr.Image(label="predicted x0", elem_id="lab-x0", **PANEL)
    latents = gr.Image(label="latent channels of x_t (latent models, first image; each channel in [-3, 3])",
                       format="png", interactive=False, height=90, elem_classes=["pixelated"])
    equation = gr.Markdown(latex_delimiters=LATEX, elem_id="lab-equation")
    update = gr.Image(label="The update as pictures that add up to x_{t−1} (DDPM and DDIM; first image; one grey "
                            "scale for all four, so they add as they look)", format="png", interactive=False,
                      height=190, elem_id="lab-update", elem_classes=["pixelated"])
    plot = gr.Image(label="Noise schedule: beta_t, alpha-bar_t and log-SNR; the line marks this step's t",
                    format="png", interactive=False, show_label=True, elem_id="lab-schedule")
    with gr.Accordion("Export: animation and recipe", open=False):
        with gr.Row():
            panel = gr.Radio(list(PANELS), value="triptych", label="Panel")
            fmt = gr.Radio(["gif", "mp4"], value="gif", label="Format")
            animate = gr.Button("Make animation")
            recipe = gr.Button("Recipe (JSON)")
        download = gr.File(label="Download", interactive=False, elem_id="lab-download")
        upload = gr.File(label="Load a recipe (JSON): replays its run exactly", file_types=[".json"], type="filepath",
                         elem_id="lab-recipe-upload")
        with gr.Row(equal_height=True):
            share = gr.Button("Share link", scale=0, min_width=160, elem_id="lab-share")
            share_link = gr.Textbox(label="Link to this run: it opens the step lab at the same pixels",
                                    buttons=["copy"], interactive=False, scale=4, elem_id="lab-share-link")
        with gr.Row(equal_height=True):
            pasted = gr.Textbox(label="Open a shared run: paste its link", scale=4, max_lines=1,
                                elem_id="lab-paste-link")
            paste_open = gr.Button("Open", scale=0, min_width=160, elem_id="lab-paste-open")
        share_token = gr.Textbox(visible=False)
    timer = gr.Timer(0.25, active=False)
    # ----- events -----
    run_event = run.click(make_lab_run(studio, budget),
                          inputs=[c.model, c.sampler, c.steps, c.seed, c.prompt, c.guidance, c.images, c.layout],
                          outputs=[c.session, c.slider, x_t, noise, x0, latents, plot, equation, update, status],
                          api_name="lab_run", **MODEL_CONCURRENCY)
    c.slider.change(lab_show, inputs=[c.session, c.slider],
                    outputs=[x_t, noise, x0, latents, plot, equation, update],
                    api_name="lab_show", show_progress="hidden")
    play.click(lab_play, inputs=[c.session, c.slider], outputs=[timer, c.slider], api_visibility="private")
    pause.click(lab_pause, outputs=timer, api_visibility="private")
    stop.click(None, cancels=[run_event], api_visibility="private")  # stops after the step in flight
    timer.tick(lab_tick, inputs=[c.session, c.slider], outputs=[timer, c.slider], api_visibility="private",
               show_progress="hidden")
    lab_export, lab_recipe = make_lab_exports(exports)
    animate.click(lab_export, inputs=[c.session, panel, fmt], outputs=download, api_name="lab_export")
    recipe.click(lab_recipe, inputs=c.session, outputs=download, api_name="lab_recipe")
    upload.upload(make_lab_load_recipe(studio), inputs=upload,
                  outputs=[c.model, c.sampler, c.steps, c.seed, c.prompt, c.guidance, c.images, c.layout, status],
                  api_name="lab_load_recipe").success(
        make_lab_replay(studio, budget), inputs=upload,
        outputs=[c.session, c.slider, x_t, noise, x0, latents, plot, equation, update, status],
        api_visibility="private", **MODEL_CONCURRENCY)  # the API replays a recipe with /lab_load_recipe, /lab_run
    share.click(lab_share, inputs=c.session, outputs=share_token, api_name="lab_share").then(
        None, inputs=share_token, outputs=share_link, js=SHARE_JS)

    def open_shared_runs(box: gr.Textbox, button: gr.Button, api_name: str | None = None) -> None:
        """``button`` opens the run whose link is in ``box``: the step lab's controls, then the run itself."""
        button.click(make_lab_open_link(studio), inputs=box,
                     outputs=[c.model, c.sampler, c.steps, c.seed, c.prompt, c.guidance, c.images, c.layout, status,
                              tabs], api_name=api_name, api_visibility="public" if api_name else "private").success(
            make_lab_replay(studio, budget, shared=True), inputs=box,
            outputs=[c.session, c.slider, x_t, noise, x0, latents, plot, equation, update, status],
            api_visibility="private", **MODEL_CONCURRENCY)  # the API then runs /lab_run with the controls

    open_shared_runs(pasted, paste_open, "lab_open_link")
    return run_event, open_shared_runs
