"""Tab 2: the step lab.

Views over one model, each a sub-tab with its own builder: the reverse process (triptych, the live
equation of the chosen sampler with the step's numbers, play/pause, GIF/MP4/recipe export), the
guidance decomposition and the cross-attention maps per token (text models), the forward process
on the user's image with SDEdit ("denoise from here"), the sampler race, and the noise schedules.
Every handler is named after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np

from demo.common import (
    GUIDANCE_SLIDER_MAX,
    LATEX,
    MODEL_CONCURRENCY,
    SAMPLER_CHOICES,
    CheckedImage,
    LockedPlot,
    Tick,
    as_int,
    card_note,
    card_request,
    describe_model,
    scheduled,
    streamed,
    user_errors,
)
from demo.figures import SchedulePicture, schedule_figure, schedule_picture, update_strip
from demo.theory import ATTENTION, FORWARD, GUIDANCE, LAYOUT_VIEW, STEPS
from diffusion.studio import (
    ASSETS,
    GUIDANCE_SCALES,
    IMAGE_LIMITS,
    LAYOUT_MODES,
    MAX_LAB_IMAGES,
    MAX_RECIPE_CHARS,
    MAX_STEPS,
    PANELS,
    RACE_LEVELS,
    ExportDir,
    RaceLane,
    Recipe,
    StateBudget,
    StepView,
    Studio,
    Trajectory,
    attention_overlays,
    labelled_race_grid,
    make_grid,
    race_milestones,
    read_image,
    trajectory_frames,
    trajectory_nbytes,
    update_latex,
    write_animation,
)

# the example images (the sheets of held-out and training digits are the lessons' data, not examples to noise)
EXAMPLES = sorted(str(p) for p in (ASSETS / "examples").glob("*.png")
                  if not p.name.startswith(("held-out", "training")))
PANEL = {"format": "png", "interactive": False, "height": 240, "elem_classes": ["pixelated"],
         "buttons": ["download", "fullscreen"]}


@dataclass
class LabSession:
    """Per-user state: the recorded run (with its per-step updates, schedule and recipe).

    Held under the app's :class:`StateBudget`, which may ``release`` it (expired, or memory needed
    for newer runs): the trajectory is dropped and the user is told to run again.
    """

    model_id: str
    trajectory: Trajectory | None
    schedule: SchedulePicture | None = None  # the run's schedule, drawn once; scrubbing moves the marker
    released: str | None = None  # why the run was released, once it was

    def release(self, reason: str) -> None:
        self.trajectory, self.schedule, self.released = None, None, reason


@dataclass
class Controls:
    """The controls above the sub-tabs, which every view reads."""

    model: gr.Dropdown
    sampler: gr.Dropdown
    steps: gr.Slider
    seed: gr.Number
    prompt: gr.Textbox
    guidance: gr.Slider
    images: gr.Slider
    layout: gr.Radio
    session: gr.State
    slider: gr.Slider  # the step being shown (built by the reverse-process view)
    t: gr.Slider | None = None  # the forward view's noise level (built by it)
    source: gr.Image | None = None  # the forward view's image (built by it)


def _trajectory(session: LabSession | None) -> Trajectory:
    """The user's recorded run, or a ``gr.Error`` that says to run (again)."""
    if session is None:
        raise gr.Error("Run the reverse process first (a run is kept for a limited time, then run it again).")
    if session.trajectory is None:
        raise gr.Error(f"Your step-lab run was released because {session.released}: run the reverse process again.")
    return session.trajectory


def _step_index(traj: Trajectory, step: float) -> int:
    """The 0-based index of the 1-based step ``step`` of ``traj``."""
    return as_int(step, "Step", 1, len(traj.steps)) - 1


# ----- reverse process -----
def make_lab_run(studio: Studio, budget: StateBudget):
    @streamed
    def lab_run(model_id: str, sampler: str, steps: float, seed: float, prompt: str,
                guidance: float, images: float = 1, layout: str = "auto") -> Iterator[tuple]:
        """Record a run step by step; ``layout`` "auto" draws a two-object prompt by a planned layout."""
        with user_errors():
            card = studio.card(model_id)
            request = card_request(card, sampler, steps, seed, prompt=prompt, guidance=guidance, layout=layout)
            for done, total, traj in studio.trajectory(card.id, request, images=images):
                view = traj.steps[-1]
                if done < total:  # every step is yielded; the browser gets one every stream_interval
                    yield Tick((gr.skip(), gr.skip(), view.x_t, view.noise, view.pred_x0, view.latents, gr.skip(),
                                gr.skip(), gr.skip(), f"Running: step {done}/{total}, {traj.wall_s:.1f} s"))
            session = LabSession(card.id, traj, schedule_picture(traj.curves))
            budget.admit(session, trajectory_nbytes(traj) + session.schedule.nbytes)
            last = traj.steps[-1]
            yield (session, gr.Slider(minimum=1, maximum=total, value=total, step=1, interactive=True),
                   last.x_t, last.noise, last.pred_x0, last.latents, session.schedule.at(last.timestep),
                   update_latex(traj.terms[-1], traj.terms[-2] if len(traj.terms) > 1 else None), update_view(last),
                   f"Done: {total} steps in {traj.wall_s:.2f} s ({traj.precision}). Drag the slider (or press "
                   "Play) to revisit any step.")

    return lab_run


def lab_show(session: LabSession | None, step: float) -> tuple:
    """Show recorded step ``step`` (1-based) of the user's run."""
    traj = _trajectory(session)
    index = _step_index(traj, step)
    view = traj.steps[index]
    return (view.x_t, view.noise, view.pred_x0, view.latents, session.schedule.at(view.timestep),
            update_latex(traj.terms[index], traj.terms[index - 1] if index else None), update_view(view))


def update_view(view: StepView) -> np.ndarray | None:
    """The step's update as pictures that add up to x_{t-1} (DDPM and DDIM; None for the other samplers)."""
    return None if view.update is None else update_strip(view.update)


def lab_play(session: LabSession | None, step: float) -> tuple:
    """Start the animation (from the first step when at the end)."""
    total = len(_trajectory(session).steps)
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
        traj = _trajectory(session)
        if panel not in PANELS or fmt not in ("gif", "mp4"):
            raise gr.Error(f"choose a panel in {PANELS} and a format gif or mp4")
        with user_errors():
            frames = trajectory_frames(traj.steps, panel)
            return str(write_animation(frames, exports.path(f"trajectory.{fmt}"), fps=12))

    def lab_recipe(session: LabSession | None) -> str:
        """The run's JSON recipe: ``python -m diffusion.sample --recipe FILE`` replays it."""
        traj = _trajectory(session)
        path = exports.path("recipe.json")
        path.write_text(traj.recipe.to_json())
        return str(path)

    return lab_export, lab_recipe


def _recipe_controls(recipe: Recipe, notes: list[str], what: str) -> tuple:
    """The step lab's controls for a checked recipe and a note on what is replayed (``what``: "Recipe loaded")."""
    with user_errors():
        if recipe.request.attend_excite:
            raise ValueError("this recipe samples with Attend-and-Excite, which the step lab does not run; "
                             "replay it with: python -m diffusion.sample --recipe FILE")
        if not 1 <= recipe.request.n <= MAX_LAB_IMAGES:
            raise ValueError(f"the step lab replays 1 to {MAX_LAB_IMAGES} images; the recipe has {recipe.request.n}")
    r = recipe.request
    note = (f"{what}: {recipe.model}, {r.sampler}, {r.steps} steps, seed {r.seed}"
            + (f", prompt \"{r.prompt}\", guidance {r.guidance_scale:g}" if r.prompt else "") + ". Running it.")
    if notes:
        note += " The pixels may differ: " + "; ".join(notes) + "."
    return (recipe.model, r.sampler, r.steps, r.seed, r.prompt, r.guidance_scale, r.n, r.layout, note)


def make_lab_load_recipe(studio: Studio):
    def lab_load_recipe(path: str | None) -> tuple:
        """Set the controls from an uploaded recipe (JSON); the run follows, so the student sees the
        teacher's exact run."""
        if not path:
            raise gr.Error("Choose a recipe file (JSON) exported by the step lab.")
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_CHARS + 1)
        with user_errors():
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("the recipe is not a UTF-8 text file") from None
            recipe, notes = studio.read_recipe(text)
        return _recipe_controls(recipe, notes, "Recipe loaded")

    return lab_load_recipe


def make_lab_read_link(studio: Studio):
    def lab_read_link(link: str) -> tuple:
        """The step lab's controls for a shared run: a link as pasted (``...?run=...``) or its parameter alone."""
        if not link or not str(link).strip():
            raise gr.Error("Paste the link of a shared run (it has ?run= in it).")
        with user_errors():
            recipe, notes = studio.read_link(link)
        return _recipe_controls(recipe, notes, "Shared run")

    return lab_read_link


def make_lab_open_link(studio: Studio):
    read = make_lab_read_link(studio)

    def lab_open_link(link: str) -> tuple:
        """A shared run opened: the step lab selected and its controls set; the run follows."""
        return (*read(link), gr.Tabs(selected="lab"))

    return lab_open_link


def lab_share(session: LabSession | None) -> str:
    """The run's link parameter (the page puts its own address in front): a student who opens the link gets the
    step lab replaying the run, to the same pixels."""
    return _trajectory(session).recipe.to_link()


SHARE_JS = "(token) => token ? window.location.origin + window.location.pathname + '?run=' + token : ''"

# A page opened with ?run=: the parameter goes into the shared-run box (outside the tabs, where it is always on
# the page) and its Open button is pressed, as a student would. A page without one does nothing at all: no
# request reaches the server (a load event on every page took a queue place and put errors on the controls).
OPEN_SHARED_RUN_JS = """() => {
  const token = new URLSearchParams(window.location.search).get('run');
  if (!token) return;
  let tries = 0;
  const open = () => {
    const box = document.querySelector('#shared-run-link textarea, #shared-run-link input');
    const button = document.querySelector('#shared-run-open');
    if (!box || !button) { if (++tries < 100) setTimeout(open, 100); return; }
    box.value = token;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => button.click(), 100);
  };
  open();
}"""


def make_lab_replay(studio: Studio, budget: StateBudget, shared: bool = False):
    """The run of an uploaded recipe (``shared``: of a shared run's link), read from the file (the link) itself on
    the server (not from the controls, which the browser may not have updated yet when the run starts)."""
    load = make_lab_read_link(studio) if shared else make_lab_load_recipe(studio)
    run = make_lab_run(studio, budget).__wrapped__

    @streamed
    def lab_replay(path: str | None) -> Iterator[tuple]:
        """The run, each status headed by the recipe's note (what is being replayed stays on screen: the
        note would otherwise last only until the first step's status, too briefly to read)."""
        *controls, note = load(path)
        head = note.replace(" Running it.", "") + " "
        for update in run(*controls[:8]):
            if isinstance(update, Tick):
                yield Tick(update.value[:-1] + (head + update.value[-1],), update.preview)
            else:
                yield update[:-1] + (head + update[-1],)

    return lab_replay


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


# ----- guidance -----
def make_lab_guidance(studio: Studio):
    def lab_guidance(session: LabSession | None, step: float) -> tuple:
        """Classifier-free guidance at recorded step ``step`` (1-based) of the user's run: the unconditional and conditional predictions and x0 at several scales."""
        traj = _trajectory(session)
        index = _step_index(traj, step)
        view = traj.steps[index]
        with user_errors():
            result = studio.guidance_view(traj.model_id, view, GUIDANCE_SCALES)
        gallery = [(img, f"w = {w:g}") for w, img in zip(result.scales, result.pred_x0, strict=True)]
        note = (f"Step {index + 1}, $t = {view.timestep:.0f}$: RMS of the guidance direction "
                f"$\\epsilon_\\theta(z_t, y) - \\epsilon_\\theta(z_t, \\varnothing)$ = {result.direction_norm:.4f} "
                f"(its picture is drawn ×{result.direction_scale:.0f}). "
                f"The run used $w = {view.guidance.guidance_scale:g}$; all scales come from one cached pair"
                + (" (of the first image)." if traj.request.n > 1 else "."))
        return result.uncond, result.text, result.direction, gallery, note

    return scheduled(lab_guidance)


def build_guidance(studio: Studio, c: Controls) -> None:
    gr.Markdown(GUIDANCE, latex_delimiters=LATEX)
    decompose = gr.Button("Decompose the current step (text models, guidance > 1)")
    with gr.Row():
        uncond = gr.Image(label="ε(z_t, ∅) unconditional", **PANEL)
        text = gr.Image(label="ε(z_t, y) conditional", **PANEL)
        direction = gr.Image(label="guidance direction ε(z_t, y) − ε(z_t, ∅)", **PANEL)
    gallery = gr.Gallery(label="predicted x0 for each guidance scale w", columns=6, height=220,
                         elem_classes=["pixelated"])
    note = gr.Markdown(latex_delimiters=LATEX)
    # ----- events -----
    decompose.click(make_lab_guidance(studio), inputs=[c.session, c.slider],
                    outputs=[uncond, text, direction, gallery, note], api_name="lab_guidance", **MODEL_CONCURRENCY)


# ----- cross-attention -----
def lab_attention(session: LabSession | None, step: float, layers: str | None) -> tuple:
    """Cross-attention per prompt token at recorded step ``step`` (1-based), over its predicted x0."""
    if session is None:
        return [], gr.skip(), "Run the reverse process with a text model to see its cross-attention."
    traj = _trajectory(session)
    if traj.tokens is not None and traj.steps and traj.steps[0].regions is not None:
        return [], gr.Dropdown(choices=["all"], value="all"), (
            "This run drew the prompt by layout: each object's region attends to its own caption, so there are no "
            "maps of the prompt's words. Set the layout switch above to **off** and run again to see the plain "
            "model's maps (the words of both objects land on one object); the **Layout** tab shows the regions.")
    if traj.tokens is None or traj.attention_layers is None:
        why = ("Cross-attention maps are recorded for runs of one image: set Images to 1 and run again."
               if traj.request.n > 1 and traj.steps and traj.steps[0].latents is not None else
               "This model has no cross-attention (pixel models are unconditional): choose a text model and run.")
        return [], gr.Dropdown(choices=["all"], value="all"), why
    index = _step_index(traj, step)
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


def build_attention(c: Controls, run_event: gr.Dependency) -> None:
    gr.Markdown(ATTENTION, latex_delimiters=LATEX)
    # a dropdown that accepts any value: each run offers its own model's resolutions
    layers = gr.Dropdown(["all"], value="all", label="Layers (feature-map resolution)", allow_custom_value=True,
                         elem_id="attention-layers")
    gallery = gr.Gallery(label="attention per token over the step's predicted x0", columns=6, height="auto",
                         elem_classes=["pixelated"], elem_id="attention-gallery")
    note = gr.Markdown(latex_delimiters=LATEX, elem_id="attention-note")
    # ----- events -----
    inputs, outputs = [c.session, c.slider, layers], [gallery, layers, note]
    # the public event first: gradio names private events after their function too
    c.slider.change(lab_attention, inputs=inputs, outputs=outputs, api_name="lab_attention", show_progress="hidden")
    # a new run whose last step has the same number as the slider's fires no .change: refresh the maps
    run_event.then(lab_attention, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")
    layers.input(lab_attention, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")


# ----- layout -----
def lab_layout(session: LabSession | None, step: float) -> tuple:
    """Each object's region and its own predicted x0 at recorded step ``step`` (1-based), then the composition."""
    if session is None:
        return [], "Run the reverse process with a two-object prompt (for example *a red circle left of a blue square*)."
    traj = _trajectory(session)
    index = _step_index(traj, step)
    view = traj.steps[index]
    if view.regions is None:
        return [], ("This run was not drawn by layout: use a text model, a prompt that names two objects "
                    "(*a red circle left of a blue square*) and the layout switch on **auto**, then run.")
    gallery = []
    for k, region in enumerate(view.regions, 1):
        gallery += [(region.weight, f"object {k}: its region (white: its prediction alone)"),
                    (region.pred_x0, f"object {k}: predicted x0 of '{region.caption}'")]
    gallery.append((view.pred_x0, "composed: the predicted x0 this step used"))
    what = {
        "joint": "Both objects share one x_t: its prediction is each caption's in its region, the two averaged outside "
                 "(MultiDiffusion, Bar-Tal et al. 2023, Eq. 5), then guided.",
        "apart": "Each object now follows its own trajectory and its own guided prediction (in the composed picture "
                 "the other object would change its colour or shape); the picture is their composition.",
        "apart, unguided": "Each object follows its own trajectory without guidance for the last fifth of the steps "
                           "(guidance in a limited interval, Kynkäänniemi et al. 2024).",
    }
    note = (f"Step {index + 1} of {len(traj.steps)}, t = {view.timestep:.0f}, phase **{view.layout_phase}**. "
            + what.get(view.layout_phase or "", ""))
    return gallery, note


def build_layout(c: Controls, run_event: gr.Dependency) -> None:
    gr.Markdown(LAYOUT_VIEW, latex_delimiters=LATEX)
    gallery = gr.Gallery(label="regions and their predictions at this step", columns=5, height="auto",
                         elem_classes=["pixelated"], elem_id="layout-gallery")
    note = gr.Markdown(elem_id="layout-note")
    # ----- events -----
    inputs, outputs = [c.session, c.slider], [gallery, note]
    c.slider.change(lab_layout, inputs=inputs, outputs=outputs, api_name="lab_layout", show_progress="hidden")
    run_event.then(lab_layout, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")


# ----- forward process and SDEdit -----
def make_forward_show(studio: Studio):
    def forward_show(model_id: str, image: np.ndarray | None, timestep: float, seed: float) -> tuple:
        """SDEdit's first half: ``image`` noised to ``timestep`` by q(x_t | x_0) with ``seed`` (latent models noise its latents)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            view = studio.forward_process(str(model_id), image, timestep, seed)
        text = (f"$x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + \\sqrt{{1-\\bar\\alpha_t}}\\,\\epsilon = "
                f"{view.signal_coef:.4f}\\,x_0 + {view.noise_coef:.4f}\\,\\epsilon$ at $t = {view.timestep}$ "
                f"($\\bar\\alpha_t = {view.alpha_prod_t:.5f}$); std of $x_t$ = {view.x_t_std:.3f} "
                f"(of $x_0$: {view.x0_std:.3f}).")
        if view.reconstruction_psnr is not None:
            text += f" Autoencoder reconstruction of the image: PSNR {view.reconstruction_psnr:.1f} dB."
        return view.x0, view.x_t, view.latents, text

    return scheduled(forward_show)


def make_forward_denoise(studio: Studio):
    @streamed
    def forward_denoise(model_id: str, image: np.ndarray | None, timestep: float, sampler: str, steps: float,
                        seed: float, prompt: str, guidance: float) -> Iterator[tuple]:
        """SDEdit: ``image`` noised to ``timestep``, then denoised from there by ``sampler`` in ``steps`` steps (text models follow ``prompt``)."""
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        with user_errors():
            request = card_request(studio.card(model_id), sampler, steps, seed, n=4, prompt=prompt, guidance=guidance)
            for update in studio.generate(str(model_id), request, previews=10, init_image=image,
                                          start_timestep=timestep):
                if update.done:
                    used = (f" Prompt (from the box above the tabs): \"{update.request.prompt}\", guidance "
                            f"{update.request.guidance_scale:g}." if update.request.prompt else "")
                    yield update.grid, (f"SDEdit from $t = {int(timestep)}$: {update.num_steps} of "
                                        f"{update.request.steps} {update.request.sampler} steps, 4 seeds, "
                                        f"{update.wall_s:.2f} s.{used}")
                elif update.preview is not None:
                    yield Tick((update.preview, f"Denoising: step {update.step}/{update.num_steps}"), preview=True)
                else:  # every step is yielded, so a cancelled run stops within one step (``streamed``)
                    yield Tick((gr.skip(), f"Denoising: step {update.step}/{update.num_steps}"))

    return forward_denoise


def build_forward(studio: Studio, c: Controls) -> None:
    gr.Markdown(FORWARD, latex_delimiters=LATEX)
    with gr.Row():
        with gr.Column(scale=1):
            c.source = CheckedImage(label=f"Your image (cropped and resized to the model; at most {IMAGE_LIMITS})",
                                    type="numpy", sources=["upload", "clipboard"], height=200,
                                    elem_id="forward-image")
            gr.Examples([[p] for p in EXAMPLES], inputs=[c.source], label="Examples from assets/")
            c.t = gr.Slider(0, MAX_STEPS - 1, value=250, step=1, label="t (noise level)", elem_id="forward-t")
            sdedit = gr.Button("Denoise from here (SDEdit)", variant="primary")
        with gr.Column(scale=2):
            with gr.Row():
                x0 = gr.Image(label="x_0 as the model sees it", **PANEL)
                x_t = gr.Image(label="x_t ~ q(x_t | x_0)", elem_id="forward-xt", **PANEL)
            latents = gr.Image(label="latent channels of x_t (latent models)", format="png", interactive=False,
                               height=90, elem_classes=["pixelated"])
            text = gr.Markdown(latex_delimiters=LATEX, elem_id="forward-text")
            result = gr.Image(label="SDEdit results (4 seeds)", format="png", interactive=False, height=240,
                              elem_classes=["pixelated"], elem_id="forward-result")
            status = gr.Markdown(latex_delimiters=LATEX)
    # ----- events -----
    inputs, outputs = [c.model, c.source, c.t, c.seed], [x0, x_t, latents, text]
    forward_show = make_forward_show(studio)
    c.t.release(forward_show, inputs=inputs, outputs=outputs, api_name="forward_show", **MODEL_CONCURRENCY)
    c.source.upload(forward_show, inputs=inputs, outputs=outputs, api_visibility="private", **MODEL_CONCURRENCY)
    sdedit.click(make_forward_denoise(studio),
                 inputs=[c.model, c.source, c.t, c.sampler, c.steps, c.seed, c.prompt, c.guidance],
                 outputs=[result, status], api_name="forward_denoise", **MODEL_CONCURRENCY)


# ----- sampler race -----
def race_table(lanes: list[RaceLane]) -> str:
    """The lanes as a Markdown table: sampler, steps, model calls, wall time, state."""
    rows = ["| sampler | steps | model calls | wall time | |", "|---|---|---|---|---|"]
    rows += [f"| {lane.sampler} | {lane.steps} | {lane.model_calls} | {lane.wall_s:.2f} s | "
             f"{'done' if lane.done else ('running' if lane.model_calls else 'waiting')} |" for lane in lanes]
    return "\n".join(rows)


def make_race(studio: Studio):
    @streamed
    def race(model_id: str, seed: float, prompt: str, guidance: float) -> Iterator[tuple]:
        """The sampler race: the same seed through DDPM, DDIM, Euler and DPM-Solver++ on ``model_id``, streamed lane by lane."""
        with user_errors():
            request = card_request(studio.card(model_id), "ddim", 50, seed, prompt=prompt, guidance=guidance)
            shown = None
            for lanes in studio.race(str(model_id), request):
                if race_milestones(lanes) == shown:
                    yield Tick((gr.skip(), gr.skip()))  # one step on, nothing new to draw (a cancel stops here)
                    continue
                shown = race_milestones(lanes)
                yield labelled_race_grid(lanes), race_table(lanes)

    return race


def build_race(studio: Studio, c: Controls) -> None:
    gr.Markdown("One seed, one model, four samplers: DDPM with 1,000 steps, DDIM 50, DPM-Solver++ 20 and "
                "Euler 30. Each row shows the predicted $\\hat x_0$ at the step whose noise level "
                "($\\bar\\alpha_t$, columns from " + ", ".join(f"{v:g}" for v in RACE_LEVELS) + ") is nearest: "
                "aligned by noise, not by step index. The fast samplers run first; DDPM streams while the others "
                "are shown.", latex_delimiters=LATEX)
    start = gr.Button("Race the samplers", variant="primary")
    grid = gr.Image(label="predicted x0 by sampler (rows) and noise level (columns)", format="png",
                    interactive=False, height=300, elem_classes=["pixelated"], elem_id="race-grid")
    table = gr.Markdown(elem_id="race-table")
    # ----- events -----
    start.click(make_race(studio), inputs=[c.model, c.seed, c.prompt, c.guidance], outputs=[grid, table],
                api_name="race", **MODEL_CONCURRENCY)


# ----- schedules -----
def make_schedules_show(studio: Studio):
    def schedules_show(model_id: str, timestep: float, image: np.ndarray | None, seed: float) -> tuple:
        """The noise schedule of ``model_id`` beside the common ones, marked at ``timestep``, and ``image`` (an example when none) noised at six t with ``seed``."""
        with user_errors():
            curves = studio.schedule(str(model_id))
            t = as_int(timestep, "t", 0, len(curves.timesteps) - 1)
            figure = schedule_figure(curves, t, studio.schedule_family(len(curves.timesteps)))
            if image is None:  # until the user loads one: an example that suits the model
                digit = studio.card(str(model_id)).kind == "pixel"
                image = read_image(next(p for p in EXAMPLES if ("digit" in p) == digit))
            ts = np.linspace(0, len(curves.timesteps) - 1, 6).round().astype(int)
            frames = studio.forward_strip(str(model_id), image, [int(s) for s in ts], seed)
            strip = make_grid(frames, ncols=len(frames))
        return figure, strip

    return scheduled(schedules_show)


def build_schedules(studio: Studio, c: Controls) -> None:
    gr.Markdown("The model's own schedule (black) against DDPM's linear, Stable Diffusion's scaled-linear "
                "and the cosine schedule (Nichol & Dhariwal 2021); the red line is the forward lab's $t$. "
                "The strip shows the forward lab's image at six evenly spaced $t$.", latex_delimiters=LATEX)
    show = gr.Button("Compare the schedules")
    plot = LockedPlot(label="Schedules")
    strip = gr.Image(label="x_t ~ q(x_t | x_0) at t = 0 … T (latent models: each latent x_t decoded to pixels)", format="png", interactive=False, height=120,
                     elem_classes=["pixelated"])
    # ----- events -----
    show.click(make_schedules_show(studio), inputs=[c.model, c.t, c.source, c.seed], outputs=[plot, strip],
               api_name="schedules_show", **MODEL_CONCURRENCY)


# Keyboard control of the reverse-process view (no mouse needed): left and right arrows step back and forward,
# Home and End jump to the first and last step, the space bar plays and pauses. Keys typed into a text field are
# left alone. Installed once per page by the app's load event (client side only, no server call).
KEYBOARD_JS = """() => {
  if (window.__labKeys) return; window.__labKeys = true;
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (target && (['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable)) return;
    const slider = document.querySelector('#lab-slider');
    if (!slider || slider.offsetParent === null) return;  // the step lab's reverse process is not on screen
    const box = slider.querySelector('input[type=number]');
    if (!box || box.disabled) return;
    const value = Number(box.value), low = Number(box.min || 1), high = Number(box.max || value);
    const moves = {ArrowLeft: value - 1, ArrowRight: value + 1, Home: low, End: high};
    if (event.key in moves) {
      box.value = String(Math.min(high, Math.max(low, moves[event.key])));
      box.dispatchEvent(new Event('input', {bubbles: true}));
      box.dispatchEvent(new Event('change', {bubbles: true}));
      event.preventDefault();
    } else if (event.key === ' ') {
      const playing = window.__labPlaying === true;
      document.querySelector(playing ? '#lab-pause' : '#lab-play')?.click();
      window.__labPlaying = !playing;
      event.preventDefault();
    }
  });
}"""


# ----- the tab -----
def build_lab_tab(studio: Studio, budget: StateBudget, exports: ExportDir, app: gr.Blocks,
                  tabs: gr.Tabs) -> Callable[[gr.Textbox, gr.Button], None]:
    """The step lab's views; returns the wiring of a shared run's Open button (the app puts the one that pages
    opened with ``?run=`` press outside the tabs, where it is always on the page)."""
    cards = studio.cards()
    default = studio.cards("pixel")[0]
    # ----- layout -----
    gr.Markdown(STEPS, latex_delimiters=LATEX)
    with gr.Row():
        model = gr.Dropdown([(card.title, card.id) for card in cards], value=default.id, label="Model", scale=2,
                            elem_id="lab-model")
        sampler = gr.Dropdown(SAMPLER_CHOICES, value="ddpm", label="Sampler", scale=1)
        steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps", scale=2)
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=1, elem_id="lab-seed")
    about = gr.Markdown(card_note(default), elem_classes=["model-card"])
    with gr.Row():
        prompt = gr.Textbox(label="Prompt (text models only)", scale=3, elem_id="lab-prompt")
        guidance = gr.Slider(0.0, GUIDANCE_SLIDER_MAX, value=4.0, step=0.5, label="Guidance (text models)", scale=1)
        images = gr.Slider(1, MAX_LAB_IMAGES, value=1, step=1, label="Images (seeds side by side)", scale=1)
        layout = gr.Radio(list(LAYOUT_MODES), value="auto", scale=1, elem_id="lab-layout",
                          label="Two objects: by layout (auto) or plain (off)")
    c = Controls(model, sampler, steps, seed, prompt, guidance, images, layout,
                 # per-user runs, bounded across users by ``budget`` and expired by gradio after the same time
                 session=gr.State(None, time_to_live=budget.ttl_s, delete_callback=budget.discard),
                 slider=gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False, elem_id="lab-slider",
                                  render=False))
    with gr.Tabs():
        with gr.Tab("Reverse process", id="reverse"):
            run_event, open_shared_runs = build_reverse(studio, budget, exports, c, tabs)
        with gr.Tab("Guidance", id="guidance"):
            build_guidance(studio, c)
        with gr.Tab("Cross-attention", id="attention"):
            build_attention(c, run_event)
        with gr.Tab("Layout (two objects)", id="layout"):
            build_layout(c, run_event)
        with gr.Tab("Forward process and SDEdit", id="forward"):
            build_forward(studio, c)
        with gr.Tab("Sampler race", id="race"):
            build_race(studio, c)
        with gr.Tab("Schedules", id="schedules"):
            build_schedules(studio, c)
    # ----- events -----
    describe_model(studio, model, about)
    app.load(None, js=KEYBOARD_JS)  # arrows, Home/End and space drive the reverse-process view
    app.load(None, js=OPEN_SHARED_RUN_JS)  # only in the browser: a page without ?run= sends nothing
    return open_shared_runs
