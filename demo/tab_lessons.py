"""Tab: Lessons. A guided course through both papers (``demo.lessons``), one ``gr.Step`` per lesson, each with
"Show me" buttons that run the embedded models live through the Studio (no pre-rendered images), a question for
the class with its answer revealed on click, and previous / next. ``?lesson=N`` opens lesson N.
Every model handler is named after its ``api_name``.
"""

from __future__ import annotations

import functools
import inspect

from collections.abc import AsyncIterator, Callable, Iterator

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from demo.common import (
    FIGURE_LOCK,
    LATEX,
    MODEL_CONCURRENCY,
    LockedPlot,
    Tick,
    scheduled,
    streamed,
    user_errors,
)
from demo.figures import (
    BLUE,
    GREY,
    compression_figure,
    labelled_strip,
    progressive_grid,
    readable,
    schedule_figure,
    shared_latent_grid,
    update_strip,
)
from demo.handout import LessonPictures, handout_html
from demo.lessons import LESSONS
from demo.lab.race import race_table
from demo.warmup import LessonResults
from diffusion.studio import (
    ASSETS,
    COMPRESSION_FIGURE,
    GUIDANCE_SCALES,
    HELD_OUT_PAIRS,
    Compression,
    FactorRow,
    PROGRESSIVE_FIGURE,
    SHARED_LATENT_FIGURE,
    ExportDir,
    NearestCopies,
    SampleRequest,
    Studio,
    attention_overlays,
    data_url_bytes,
    labelled_race_grid,
    make_grid,
    race_milestones,
    read_image,
    update_latex,
)

PIXEL, LATENT = "ddpm-mnist", "ldm-shapes"  # the embedded models every lesson runs on
COPIES_SHOWN = 16  # lesson 9: new digits compared with the training set
DIGIT = ASSETS / "examples" / "digit-3.png"
SHAPES = ASSETS / "examples" / "shapes-red-circle.png"
PICTURE = {"format": "png", "interactive": False, "elem_classes": ["pixelated"], "buttons": ["download", "fullscreen"]}


def _image(path) -> np.ndarray:  # noqa: ANN001 - a path
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _enlarge(picture: np.ndarray, side: int = 96) -> np.ndarray:
    """Small pictures (32x32 digits) repeated to about ``side`` pixels, crisp, for a projector."""
    factor = max(1, side // max(picture.shape[:2]))
    return picture.repeat(factor, 0).repeat(factor, 1)


# ----- 1. the forward process -----
def make_lesson_forward(studio: Studio):
    def lesson_forward(seed: float) -> tuple:
        """Lesson 1: one digit noised to five timesteps by q(x_t | x_0) (DDPM eq. 4), with the schedule; ``seed`` draws the noise."""
        with user_errors():
            curves = studio.schedule(PIXEL)
            T = len(curves.timesteps)
            ts = [0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
            strip = studio.forward_strip(PIXEL, _image(DIGIT), ts, seed)
            figure = schedule_figure(curves, None, studio.schedule_family(T))
        ab = [float(curves.alphas_cumprod[t]) for t in ts]
        note = " · ".join(f"$t = {t}$: $\\bar\\alpha_t = {a:.3f}$, SNR = {a / max(1 - a, 1e-12):.3g}"
                          for t, a in zip(ts, ab, strict=True))
        return labelled_strip([_enlarge(s) for s in strip], [f"t = {t}" for t in ts]), figure, note

    return scheduled(lesson_forward)


# ----- 2. what the network learns -----
def error_figure(timesteps: np.ndarray, error: np.ndarray, spread: np.ndarray) -> Figure:
    with FIGURE_LOCK:
        fig = Figure(figsize=(9, 3.8), dpi=90)
        ax = fig.subplots()
        ax.fill_between(timesteps, error - spread, error + spread, color=BLUE, alpha=0.15, label="± 1 std over digits")
        ax.plot(timesteps, error, color=BLUE, lw=2.6, marker="o", label=r"$\|\epsilon - \epsilon_\theta(x_t, t)\|^2$ per pixel")
        ax.axhline(1.0, color=GREY, lw=1.8, ls="--", label=r"predicting $\epsilon_\theta = 0$")
        ax.set_xlabel("t", fontsize=14)
        ax.set_ylabel("noise-prediction error", fontsize=14)
        ax.tick_params(labelsize=12)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=14)
        return readable(fig)


def make_lesson_denoising(studio: Studio):
    def lesson_denoising() -> tuple:
        """Lesson 2: the DDPM's noise-prediction error against t on 64 held-out digits, with its predicted noise and x0 at five t."""
        with user_errors():
            result = studio.denoising_error(PIXEL)
        gallery = []
        for t, (x_t, eps, x0) in zip(result.shown, result.examples, strict=True):
            gallery += [(_enlarge(x_t), f"x_t, t = {t}"), (_enlarge(eps), f"predicted noise, t = {t}"),
                        (_enlarge(x0), f"predicted x0, t = {t}")]
        hard, easy = int(np.argmax(result.error)), int(np.argmin(result.error))
        note = (f"Measured on {result.images} held-out digits (never trained on), one noise draw each: the error is "
                f"{result.error[hard]:.3f} at $t = {result.timesteps[hard]}$ and {result.error[easy]:.4f} at "
                f"$t = {result.timesteps[easy]}$.")
        return error_figure(result.timesteps, result.error, result.spread), gallery, note

    return scheduled(lesson_denoising)


# ----- 3. sampling -----
def make_lesson_sampling(studio: Studio):
    @streamed
    def lesson_sampling(seed: float) -> Iterator[tuple]:
        """Lesson 3: one digit sampled by DDPM (Algorithm 2) in 50 steps, streamed step by step; ``seed`` in [0, 2^32 - 1]."""
        with user_errors():
            request = SampleRequest(sampler="ddpm", steps=50, n=1, seed=seed)
            for done, total, traj in studio.trajectory(PIXEL, request):
                if done < total:
                    yield Tick((gr.skip(), gr.skip(), f"Running: step {done}/{total}", gr.skip(), gr.skip()))
        picks = np.linspace(0, total - 1, 8).round().astype(int)
        rows = [_enlarge(traj.steps[i].x_t) for i in picks] + [_enlarge(traj.steps[i].pred_x0) for i in picks]
        middle = int(picks[len(picks) // 2])
        return_note = (f"Top: $x_t$; bottom: $\\hat x_0$, at steps {', '.join(str(i + 1) for i in picks)} of {total} "
                       f"(DDPM, seed {int(seed)}, {traj.wall_s:.2f} s). The update of step {middle + 1}:")
        update = traj.steps[middle].update
        shown = (make_grid(np.stack(rows), ncols=len(picks)),
                 update_latex(traj.terms[middle], traj.terms[middle - 1] if middle else None), return_note,
                 None if update is None else update_strip(update))
        yield (*shown, gr.skip())
        with user_errors():  # then Ho et al.'s Fig. 6 live: four samples, their x0 estimate as t falls
            for done, total, view in studio.progressive(PIXEL, SampleRequest(sampler="ddpm", steps=50, n=4, seed=seed)):
                if view is None:
                    yield Tick((gr.skip(), gr.skip(), return_note + f" Progressive generation: step {done}/{total}",
                                gr.skip(), gr.skip()))
        yield (*shown[:2], return_note + f" Below: progressive generation, as in [Ho et al. 2020, Fig. 6]"
               f"({PROGRESSIVE_FIGURE}): four samples (seed {int(seed)}), each one's $\\hat x_0$ as $t$ falls; the "
               "rough shape comes first, the details last.", shown[3], progressive_grid(view))

    return lesson_sampling


# ----- 4. fewer steps -----
RACE_NOTE = ("\n\nAll lanes start from the same $x_T$. DDIM ($\\eta = 0$), DPM-Solver++ and Euler all solve the same "
             "deterministic probability-flow ODE, so they usually end on the same digit; DDPM adds fresh noise at every step "
             "(its $\\sigma_t z$), follows another path from the same start, and may end on another digit.")


def make_lesson_race(studio: Studio):
    @streamed
    def lesson_race(seed: float) -> Iterator[tuple]:
        """Lesson 4: the same seed through four samplers side by side (DDPM, DDIM, Euler, DPM-Solver++), streamed."""
        with user_errors():
            request = SampleRequest(sampler="ddim", steps=50, n=1, seed=seed)
            shown = None
            for lanes in studio.race(PIXEL, request):
                if race_milestones(lanes) == shown:
                    yield Tick((gr.skip(), gr.skip()))
                    continue
                shown = race_milestones(lanes)
                yield labelled_race_grid(lanes), race_table(lanes) + RACE_NOTE

    return lesson_race


# ----- 5. noise and determinism -----
def make_lesson_determinism(studio: Studio):
    @streamed
    def lesson_determinism(seed: float) -> Iterator[tuple]:
        """Lesson 5: DDIM with eta 0 twice (equal), then eta 0.5 and 1 (different): determinism against noise, same ``seed``."""
        runs = [("DDIM, eta = 0", 0.0), ("the same, again", 0.0), ("DDIM, eta = 0.5", 0.5), ("DDIM, eta = 1", 1.0)]
        grids = []
        with user_errors():
            for title, eta in runs:
                request = SampleRequest(sampler="ddim", steps=50, n=4, seed=seed, eta=eta)
                for update in studio.generate(PIXEL, request, previews=0):
                    if not update.done:
                        yield Tick((gr.skip(), f"Running: {title}, step {update.step}/{update.num_steps}"))
                grids.append((title, update.images))
        same = np.array_equal(grids[0][1], grids[1][1])
        changed = [int(np.sum(np.any(g[1] != grids[0][1], axis=(1, 2)))) for g in grids[2:]]
        gallery = [(_enlarge(make_grid(images, ncols=4), 256), title) for title, images in grids]
        with user_errors():  # Ho et al.'s Fig. 7 live: one DDPM run, continued three times from its x_t
            for done, total, shared in studio.shared_latent(PIXEL, SampleRequest(sampler="ddpm", steps=50, n=1,
                                                                                 seed=seed)):
                if shared is None:
                    yield Tick((gr.skip(), f"Running: samples that share an x_t, step {done}/{total}"))
        gallery.append((shared_latent_grid(shared), "samples that share an x_t (Ho et al. 2020, Fig. 7); rows: t = "
                        + ", ".join(f"{t:.0f}" for t in shared.timesteps)))
        note = (f"Seed {int(seed)}, 4 images each, one starting noise $x_T$ for all runs. Run twice: "
                f"**{'identical, byte for byte' if same else 'DIFFERENT (a reproducibility bug)'}**. "
                f"Images that differ from eta = 0: {changed[0]} of 4 at eta = 0.5, {changed[1]} of 4 at eta = 1. "
                "The eta = 0.5 and eta = 1 runs draw their step noise $z$ from the same seeded generator in the same "
                "order: they share every noise draw and differ only in its scale $\\sigma_t$, so they often end on the "
                "same digits as each other. Last, as in [Ho et al. 2020, Fig. 7](" + SHARED_LATENT_FIGURE + "): one "
                "DDPM run, continued three times from its $x_t$ with fresh noise. From a late $x_t$ (small $t$) the "
                "samples agree on almost everything, from an early one only on the rough shape: what $x_t$ has "
                "already decided.")
        yield gallery, note

    return lesson_determinism


# ----- 6. latent space -----
def make_lesson_latent(studio: Studio):
    def lesson_latent() -> tuple:
        """Lesson 6: a shapes image, its autoencoder latents and the decoded image, one UNet step's cost in pixels and
        in latents, and Rombach et al.'s trade by downsampling factor (reconstructions and cost at f = 1, 2, 4, 8)."""
        with user_errors():
            image = _image(SHAPES)
            view = studio.forward_process(LATENT, image, 0, 0)
            from PIL import Image

            original = np.asarray(Image.fromarray(image).resize(view.x0.shape[1::-1], Image.Resampling.BICUBIC))
            factors = studio.compression(LATENT, original)
            costs = [studio.step_cost(LATENT), factors.rows[0].cost, studio.step_cost(PIXEL)]
        error = np.abs(original.astype(int) - view.x0.astype(int)).max(-1)
        error_map = np.clip(error * 4, 0, 255).astype(np.uint8)  # x4: small errors made visible
        gallery = [(_enlarge(original, 256), "x (64x64x3)"), (_enlarge(view.x0, 256), "D(E(x)): the reconstruction"),
                   (_enlarge(error_map, 256), "|x - D(E(x))|, x4")]
        if view.latents is not None:
            gallery.append((view.latents, "z = E(x): 4 channels of 16x16"))
        rows = ["| model | denoises | values | UNet parameters | FLOPs per step | time per step (here) |",
                "|---|---|---|---|---|---|"]
        rows += [f"| {c.model_id} | {'x'.join(str(s) for s in c.shape)} | {c.values:,} | {c.parameters / 1e6:.1f} M | "
                 f"{c.flops / 1e6:.0f} MFLOP | {c.ms:.1f} ms |" for c in costs]
        psnr = f"{view.reconstruction_psnr:.1f} dB" if view.reconstruction_psnr is not None else "n/a"
        note = (f"Reconstruction PSNR: **{psnr}**; the error sits on the outlines.\n\n" + "\n".join(rows)
                + f"\n\nMeasured now with torch's flop counter, one image, one step (text models: the "
                f"conditional branch; guidance doubles it). The same UNet on the 64x64x3 pixels would need "
                f"**{costs[1].flops / costs[0].flops:.1f}x** the compute of the latent one.")
        strip = labelled_strip([_enlarge(r.reconstruction, 192) for r in factors.rows],
                               [_factor_label(r) for r in factors.rows])
        return gallery, note, strip, compression_figure(factors), _compression_note(factors)

    return scheduled(lesson_latent)


def _factor_label(row: FactorRow) -> str:
    c, h, w = row.cost.shape
    return "f = 1: the image" if row.factor == 1 else f"f = {row.factor}: {c}x{h}x{w}, {row.psnr:.1f} dB"


def _compression_note(view: Compression) -> str:
    """The trade by factor as a table: the latent, one step's compute and time, a sample's time, and the gate's
    bounds (PSNR and the judge on reconstructions), then what it shows, as Rombach et al. found it."""
    rows = ["| f | denoises | FLOPs per step | seconds per sample (here) | PSNR (held-out) | best reachable: "
            "all attributes | two objects: both |", "|---|---|---|---|---|---|---|"]
    for r in view.rows:
        b = r.bound
        quality = "lossless" if r.factor == 1 else f"{b['psnr']:.1f} dB" if "psnr" in b else "n/a"
        exact = f"{b['exact']:.3f}" if "exact" in b else "n/a"
        both = f"{b['both']:.3f}" if "both" in b else "n/a"
        rows.append(f"| {r.factor} | {'x'.join(str(s) for s in r.cost.shape)} | {r.cost.flops / 1e6:.0f} MFLOP | "
                    f"{r.seconds_per_sample(view.steps, view.guided):.2f} s | {quality} | {exact} | {both} |")
    fastest, slowest = view.rows[-1], view.rows[0]
    speedup = slowest.seconds_per_sample(view.steps, view.guided) / fastest.seconds_per_sample(view.steps, view.guided)
    return ("**The trade by downsampling factor** ([Rombach et al. 2022, Sec. 4.1, the figure of quality against "
            f"throughput]({COMPRESSION_FIGURE})), on our own autoencoders (f = 2, 4, 8, one training recipe; "
            "f = 1 is the pixels). Training a latent model per factor is beyond this laptop, so the quality side is "
            "the bound every latent model at that factor lives under: its samples are decoder outputs, and the judge "
            "on the autoencoder's reconstructions of the gate's scenes is the best they could score.\n\n"
            + "\n".join(rows) + f"\n\nSeconds per sample: DDIM {view.steps} with guidance (two UNet calls a step) "
            f"and one decode, timed now. f = {fastest.factor} samples **{speedup:.0f}x** faster than the pixels; "
            "each halving of the latent side loses detail the decoder cannot put back. The paper found the same "
            "shape on ImageNet: f = 1 and 2 slow, f = 4 to 16 the balance, f = 32 too lossy.")


# ----- 7. text conditioning -----
def make_lesson_text(studio: Studio):
    @streamed
    def lesson_text(prompt: str, seed: float) -> Iterator[tuple]:
        """Lesson 7: ``prompt`` as the text encoder's tokens, then one image of it (DDIM 25, w = 4), streamed."""
        with user_errors():
            tokens = studio.prompt_tokens(LATENT, prompt)
            request = SampleRequest(sampler="ddim", steps=25, n=1, seed=seed, prompt=str(prompt), guidance_scale=4.0)
            for done, total, traj in studio.trajectory(LATENT, request):
                if done < total:
                    yield Tick((gr.skip(), f"Running: step {done}/{total}"))
            if traj.tokens is None:
                yield [], "This model records no cross-attention."
                return
            gallery = attention_overlays(traj.steps[-1], traj.tokens, "all")
        unknown = (" Unknown words (each read as the one [UNK] token, so the model never sees which): **" + ", ".join(tokens.unknown_words) + "**."
                   if tokens.unknown_words else " Every word is in the vocabulary.")
        yield gallery, f"Tokens: {' · '.join(tokens.tokens)}.{unknown} Maps at the last of {total} steps."

    return lesson_text


# ----- 8. guidance -----
def make_lesson_guidance(studio: Studio):
    @streamed
    def lesson_guidance(prompt: str, seed: float) -> Iterator[tuple]:
        """Lesson 8: ``prompt`` at several guidance scales from one cached pair of predictions per step, streamed."""
        with user_errors():
            request = SampleRequest(sampler="ddim", steps=25, n=1, seed=seed, prompt=str(prompt), guidance_scale=4.0)
            for done, total, traj in studio.trajectory(LATENT, request):
                if done < total:
                    yield Tick((gr.skip(), f"Running: step {done}/{total}"))
            index = total // 3  # early enough that guidance still shapes the image
            view = studio.guidance_view(LATENT, traj.steps[index], GUIDANCE_SCALES)
        parts = [(view.uncond, "ε(z_t, ∅)"), (view.text, "ε(z_t, y)"),
                 (view.direction, f"direction ×{view.direction_scale:.0f}")]
        parts += [(img, f"x̂0, w = {w:g}") for w, img in zip(view.scales, view.pred_x0, strict=True)]
        yield parts, (f"Step {index + 1} of {total}: the same pair of predictions, combined with each $w$ into the "
                      "predicted $\\hat x_0$. The guidance direction $\\epsilon_\\theta(z_t, y) - \\epsilon_\\theta(z_t, "
                      f"\\varnothing)$ is small (RMS {view.direction_norm:.4f}): its picture is drawn "
                      f"×{view.direction_scale:.0f}, so that all but its largest 1% of values fit between black and white.")

    return lesson_guidance


# ----- 9. limits -----
def copies_pictures(copies: NearestCopies) -> list[tuple[np.ndarray, str]]:
    """Each sample beside its nearest training digit (a 2-pixel white gap), enlarged, with the distance."""
    items = []
    for sample, near, d in zip(copies.samples, copies.nearest, copies.distances, strict=True):
        pair = np.concatenate([sample, np.full((sample.shape[0], 2), 255, np.uint8), near], axis=1)
        mark = " · near copy" if d < copies.threshold else ""
        items.append((_enlarge(pair), f"distance {d:.2f}{mark}"))
    return items


def make_lesson_limits(studio: Studio):
    @streamed
    def lesson_limits(seed: float) -> Iterator[tuple]:
        """Lesson 9: where the plain models fail (a colour-shape pair never seen together, two objects) and 16 new digits beside their nearest training digits."""
        colour, shape = sorted(HELD_OUT_PAIRS)[0]
        prompts = [f"a {colour} {shape}", "a red circle left of a blue square"]
        gallery = []
        with user_errors():
            for prompt in prompts:
                request = SampleRequest(sampler="ddim", steps=25, n=4, seed=seed, prompt=prompt, guidance_scale=4.0,
                                        layout="off")  # the plain model's limits (lesson 10 draws by layout)
                for update in studio.generate(LATENT, request, previews=0):
                    if not update.done:
                        yield Tick((gr.skip(), gr.skip(), f"Running: {prompt!r}, step {update.step}/{update.num_steps}"))
                gallery.append((update.grid, prompt))
            # memorisation: fresh digits beside their nearest training digits
            request = SampleRequest(sampler="ddim", steps=25, n=COPIES_SHOWN, seed=seed)
            for update in studio.generate(PIXEL, request, previews=0):
                if not update.done:
                    yield Tick((gr.skip(), gr.skip(), f"Running: {COPIES_SHOWN} digits, step {update.step}/{update.num_steps}"))
            digits = update.images
            copies = studio.nearest_copies(digits) if digits.shape[1:] == (32, 32) else None
        note = (f"{prompts[0]!r}: a colour-shape pair never shown together in training. {prompts[1]!r}: two objects "
                f"and a relation, the weak spot. Seed {int(seed)}, 4 images each.\n\n")
        if copies is None:  # another DDPM than the embedded digit model
            yield gallery, [], note + (f"**Memorisation** compares 32x32 digits with the training digits; this DDPM makes "
                                       f"{digits.shape[1]}x{digits.shape[2]} images.")
            return
        held = copies.held_out_distances
        yield gallery, copies_pictures(copies), note + (
            f"**Memorisation.** {COPIES_SHOWN} new digits, each beside its nearest of the 4,000 training digits (L2 over "
            f"pixels in [0, 1]): median distance **{np.median(copies.distances):.2f}** (closest "
            f"{copies.distances.min():.2f}). The {len(held)} held-out digits, never trained on, are this far from their "
            f"nearest training digit: median **{np.median(held):.2f}**, closest {copies.threshold:.2f}. "
            f"**{copies.near_copies} of {COPIES_SHOWN}** samples are nearer to a training digit than that closest "
            "held-out digit (near copies): a copier would sit far below the held-out distances.")

    return lesson_limits


# ----- 10. two objects by layout -----
LAYOUT_WORDS = ("left", "right", "above", "below", *("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"),
                *("circle", "square", "triangle", "star", "heart", "diamond"))


def make_lesson_layout(studio: Studio):
    @streamed
    def lesson_layout(prompt: str, seed: float) -> Iterator[tuple]:
        """The same prompt and seed with the layout off (and where its words attend) and on (its regions)."""
        runs = {}
        with user_errors():
            for mode in ("off", "auto"):
                request = SampleRequest(sampler="ddim", steps=25, n=1, seed=seed, prompt=str(prompt),
                                        guidance_scale=4.0, layout=mode)
                for done, total, traj in studio.trajectory(LATENT, request):
                    if done < total:
                        yield Tick((gr.skip(), f"Running: layout {mode}, step {done}/{total}"))
                runs[mode] = traj
        plain, planned = runs["off"], runs["auto"]
        gallery = [(plain.final, "layout off: the plain model")]
        if plain.tokens is not None and plain.steps[-1].attention is not None:
            index = 2 * len(plain.steps) // 3  # where the objects have formed
            gallery += [(image, f"layout off, step {index + 1}: {label}")
                        for image, label in attention_overlays(plain.steps[index], plain.tokens, "all")
                        if label.split(" · ")[0] in LAYOUT_WORDS]
        regions = planned.steps[len(planned.steps) // 3].regions
        if regions is None:
            yield gallery, (f"{str(prompt)!r} names no two objects the parser can read (for example "
                            "*a red circle left of a blue square*), so the layout changes nothing.")
            return
        gallery.append((planned.final, "layout on: one region per object"))
        for k, region in enumerate(regions, 1):
            gallery += [(region.weight, f"region {k}"), (region.pred_x0, f"{region.caption}: predicted x0")]
        yield gallery, (f"Seed {int(seed)}. Layout: {studio.layouts(planned.request)[0].describe()}. The attention "
                        "maps are the plain run's; the regions and their predictions are the layout run's, at step "
                        f"{len(planned.steps) // 3 + 1} of {len(planned.steps)}.")

    return lesson_layout


# ----- the tab -----
def _show_me_button(label: str, number: int, handler: Callable, inputs: list, outputs: Callable[[], list],
             api_name: str, results: LessonResults) -> list:
    """The lesson's Show me button, then its outputs (built by ``outputs``, returned), then the event; its final
    results are kept in ``results`` (the warm-up runs it with its inputs' defaults). A lesson with a ``predict``
    question hides its outputs when Show me is pressed and asks it; a click reveals them (predict, then reveal)."""
    predict = LESSONS[number - 1].predict
    button = gr.Button(f"Show me: {label}", variant="primary", elem_id=f"lesson-{number}-show")
    if predict is not None:
        ask = gr.Markdown(f"**Predict first.** {predict}", latex_delimiters=LATEX, visible=False,
                          elem_id=f"lesson-{number}-predict", elem_classes=["predict"])
        reveal = gr.Button("Reveal the result", visible=False, elem_id=f"lesson-{number}-reveal-result")
    with gr.Column(elem_id=f"lesson-{number}-result") as result:
        shown = outputs()
    remembered = results.remember(number, api_name, handler, [component.value for component in inputs])
    button.click(remembered, inputs=inputs, outputs=shown, api_name=api_name, **MODEL_CONCURRENCY)
    if predict is not None:  # the outputs fill while hidden; the class predicts; the teacher reveals
        button.click(lambda: (gr.Column(visible=False), gr.Markdown(visible=True), gr.Button(visible=True)),
                     outputs=[result, ask, reveal], api_visibility="private", queue=False)
        reveal.click(lambda: (gr.Column(visible=True), gr.Button(visible=False)), outputs=[result, reveal],
                     api_visibility="private", queue=False)
    return shown


def _note() -> gr.Markdown:
    return gr.Markdown(latex_delimiters=LATEX)


def _gallery(label: str, number: int, columns: int, elem_id: str | None = None) -> gr.Gallery:
    """A lesson's output gallery: not an upload target (the handout reads it as an input, which would otherwise make
    it one), whole pictures (grids are never cropped to square tiles), captions readable (``CSS`` in demo.app)."""
    return gr.Gallery(label=label, columns=columns, height="auto", elem_classes=["pixelated", "lesson-gallery"],
                      elem_id=elem_id or f"lesson-{number}-view", interactive=False, object_fit="contain")


PLAYGROUND_LINKS = {  # lessons that continue in the Playground tab: what to do there, and the view it opens
    2: ("Open the Playground: train a model on points yourself, then its \"Loss against t\" view", "pg-loss-t"),
    5: ("Open the Playground: after training, its \"DDPM against DDIM paths\" view", "pg-paths"),
}


def _views(studio: Studio, number: int, results: LessonResults) -> list:
    """The live view of lesson ``number`` (1-based): its controls, its Show me button and its outputs
    (returned: the handout reads them)."""
    _show_me = functools.partial(_show_me_button, results=results)
    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", render=False)
    if number == 1:
        seed.render()
        return _show_me("a digit at six noise levels", number, make_lesson_forward(studio), [seed], lambda: [
            gr.Image(label="one digit at six noise levels", elem_id="lesson-1-view", **PICTURE),
            LockedPlot(label="the schedule: beta_t (log axis), alpha-bar_t and log-SNR"), _note()], "lesson_forward")
    elif number == 2:
        return _show_me("the error against t on held-out digits", number, make_lesson_denoising(studio), [], lambda: [
            LockedPlot(label="the embedded DDPM's error against t", elem_id="lesson-2-view"),
            _gallery("x_t, predicted noise and predicted x0 at five t", number, 6, "lesson-2-steps"), _note()],
            "lesson_denoising")
    elif number == 3:
        seed.render()
        return _show_me("the reverse process, 50 DDPM steps", number, make_lesson_sampling(studio), [seed], lambda: [
            gr.Image(label="x_t (top) and predicted x0 (bottom)", elem_id="lesson-3-view", **PICTURE), _note(),
            _note(), gr.Image(label="that step's update as pictures: they add up to x_{t−1} (one grey scale for all)",
                              elem_id="lesson-3-update", **PICTURE),
            gr.Image(label="progressive generation (Ho et al. 2020, Fig. 6): x̂0 of four samples as t falls",
                     elem_id="lesson-3-progressive", **PICTURE)], "lesson_sampling")
    elif number == 4:
        seed.render()
        return _show_me("the sampler race", number, make_lesson_race(studio), [seed], lambda: [
            gr.Image(label="predicted x0 by sampler (rows) and noise level (columns)", elem_id="lesson-4-view",
                     **PICTURE), _note()], "lesson_race")  # the note's maths ($x_T$) is typeset
    elif number == 5:
        seed.render()
        return _show_me("the same seed twice, and DDIM's eta", number, make_lesson_determinism(studio), [seed],
                 lambda: [_gallery("one seed, four runs", number, 4), _note()], "lesson_determinism")
    elif number == 6:
        return _show_me("the autoencoder and the cost of a step", number, make_lesson_latent(studio), [],
                 lambda: [_gallery("the autoencoder", number, 4), _note(),
                          gr.Image(label="one image through autoencoders of f = 1, 2, 4, 8 (Rombach et al. 2022, "
                                         "Sec. 4.1)", elem_id="lesson-6-factors", **PICTURE),
                          LockedPlot(label="cost against reachable quality, by f", elem_id="lesson-6-trade"),
                          _note()], "lesson_latent")
    elif number in (7, 8):
        default = "a large red circle top left" if number == 7 else "a blue star"  # one object: the model's strength
        prompt = gr.Textbox(value=default, label="Prompt", max_length=200)
        seed.render()
        if number == 7:
            return _show_me("cross-attention per word", number, make_lesson_text(studio), [prompt, seed],
                     lambda: [_gallery("per token: where the model looked", number, 6), _note()], "lesson_text")
        else:
            return _show_me("guidance at one step, w from 0 to 10", number, make_lesson_guidance(studio), [prompt, seed],
                     lambda: [_gallery("one step, decomposed", number, 6), _note()], "lesson_guidance")
    elif number == 9:
        seed.render()
        return _show_me("a held-out pair, a two-object prompt and the nearest training digits", number,
                        make_lesson_limits(studio), [seed],
                        lambda: [_gallery("where the model fails", number, 4),
                                 _gallery("memorisation: each new digit (left) beside its nearest training digit",
                                          number, 8, "lesson-9-copies"), _note()], "lesson_limits")
    elif number == 10:
        prompt = gr.Textbox(value="a red circle left of a blue square", label="Prompt (two objects)", max_length=200)
        seed.render()
        return _show_me("layout off, then on", number, make_lesson_layout(studio), [prompt, seed],
                        lambda: [_gallery("the same prompt and seed: layout off, then on", number, 5), _note()],
                        "lesson_layout")
    return []


# ----- the handout -----
def _picture_of(value: object) -> np.ndarray | None:
    """A shown picture as uint8: an image's array, a gallery item's file, or a plot's PNG data URL."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, str) and value:  # a gallery file in gradio's cache
        return read_image(value)
    plot = getattr(value, "plot", None)  # a matplotlib plot as gradio sends it: a PNG or WebP data URL
    if isinstance(plot, str) and plot.startswith("data:image/"):
        return read_image(data_url_bytes(plot))
    return None


def make_lessons_handout(views: list[tuple[int, gr.components.Component]], exports: ExportDir):
    def lessons_handout(*values: object) -> str:
        """The handout (one HTML file) of every lesson with what the class generated in its views."""
        shown: dict[int, LessonPictures] = {}
        with user_errors():
            for (number, component), value in zip(views, values, strict=True):
                got = shown.setdefault(number, LessonPictures())
                if value is None or (isinstance(value, (str, list)) and not value):
                    continue
                label = getattr(component, "label", None) or f"lesson {number}"
                if isinstance(component, gr.Markdown):
                    got.notes.append(str(value))
                elif isinstance(component, gr.Gallery):
                    for item, caption in value:
                        picture = _picture_of(item)
                        if picture is not None:
                            got.pictures.append((picture, caption or label))
                else:
                    picture = _picture_of(value)
                    if picture is not None:
                        got.pictures.append((picture, label))
            path = exports.path("diffusion-classroom-handout.html")
            path.write_text(handout_html(LESSONS, shown), encoding="utf-8")
        return str(path)

    # one named parameter per view (lesson3_gallery1, lesson3_note1, ...): the API page names what each input is
    names, counts = [], {}
    for number, component in views:
        kind = {gr.Markdown: "note", gr.Gallery: "gallery"}.get(type(component), "picture")
        counts[number, kind] = counts.get((number, kind), 0) + 1
        names.append(f"lesson{number}_{kind}{counts[number, kind]}")
    lessons_handout.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=object) for name in names],
        return_annotation=str)
    return lessons_handout


def lesson_from_link(request: gr.Request) -> gr.Walkthrough:
    """``?lesson=N`` (1 to the number of lessons) opens lesson N; anything else leaves the first open."""
    value = request.query_params.get("lesson", "") if request is not None else ""
    try:
        number = int(value)
    except ValueError:
        return gr.Walkthrough(selected=1)
    return gr.Walkthrough(selected=number if 1 <= number <= len(LESSONS) else 1)


def make_lessons_warm_up(results: LessonResults):
    async def lessons_warm_up() -> AsyncIterator[str]:
        """Run every lesson's Show me once with its defaults, so that in class each answers from memory."""
        lines: list[str] = []
        async for done, total, line in results.warm():
            lines.append(line)
            yield f"Warming up: {done} of {total} done.\n\n" + "\n".join(f"- {item}" for item in lines)
        yield (f"Warm: every Show me with its defaults answers at once from now on ({len(results)} results kept).\n\n"
               + "\n".join(f"- {item}" for item in lines))

    return lessons_warm_up


def build_lessons_tab(studio: Studio, app: gr.Blocks, exports: ExportDir,
                      results: LessonResults) -> dict[int, gr.Button]:
    """The tab; ``results`` keeps each Show me's final results (the warm-up fills it). Returns the buttons of the
    lessons that continue in the Playground (lesson number -> button), for :func:`link_to_playground` once that
    tab exists."""
    views: list[tuple[int, gr.components.Component]] = []  # every lesson's outputs, for the handout
    links: dict[int, gr.Button] = {}
    # ----- layout -----
    gr.Markdown("## Lessons\nA course through DDPM (Ho et al. 2020) and latent diffusion (Rombach et al. 2022). "
                "Every **Show me** runs the embedded models live. Link to a lesson with `?lesson=N`.",
                elem_id="lessons-intro")
    with gr.Walkthrough(selected=1, elem_id="lessons") as walkthrough:
        for number, lesson in enumerate(LESSONS, start=1):
            with gr.Step(f"{number}. {lesson.short}", id=number, elem_id=f"lesson-{number}"):
                gr.Markdown(f"### {lesson.title}\n" + lesson.text, latex_delimiters=LATEX, elem_classes=["lesson-text"])
                views += [(number, component) for component in _views(studio, number, results)]
                if number in PLAYGROUND_LINKS:
                    links[number] = gr.Button(PLAYGROUND_LINKS[number][0], variant="secondary",
                                              elem_id=f"lesson-{number}-playground")
                with gr.Group():
                    gr.Markdown(f"**Question for the class.** {lesson.question}", latex_delimiters=LATEX)
                    reveal = gr.Button("Reveal the answer", size="sm", elem_id=f"lesson-{number}-reveal")
                    answer = gr.Markdown(f"**Answer.** {lesson.answer}", latex_delimiters=LATEX, visible=False,
                                         elem_id=f"lesson-{number}-answer")
                with gr.Row():
                    back = gr.Button("← Previous", interactive=number > 1)
                    forward = gr.Button("Next →", interactive=number < len(LESSONS))
                # ----- events (of this lesson) -----
                reveal.click(lambda: gr.Markdown(visible=True), outputs=answer, api_visibility="private", queue=False)
                back.click(lambda n=number: gr.Walkthrough(selected=max(1, n - 1)), outputs=walkthrough,
                           api_visibility="private", queue=False)
                forward.click(lambda n=number: gr.Walkthrough(selected=min(len(LESSONS), n + 1)), outputs=walkthrough,
                              api_visibility="private", queue=False)
    with gr.Row():
        handout = gr.Button("Export handout (HTML): every lesson with the pictures generated here", elem_id="lessons-handout")
        handout_file = gr.File(label="Handout", interactive=False, elem_id="lessons-handout-file")
    with gr.Accordion("Before class: warm up", open=False, elem_id="lessons-warm"):
        gr.Markdown("Runs every lesson's **Show me** once with its default inputs (a few minutes). From then on each "
                    "answers at once, with the same pictures, however busy the app is. `python app.py --warm` does "
                    "the same at start-up.")
        warm = gr.Button("Warm up every Show me", elem_id="lessons-warm-up")
        warm_status = gr.Markdown(elem_id="lessons-warm-status")
    # ----- events -----
    app.load(lesson_from_link, outputs=walkthrough, api_visibility="private", queue=False)
    handout.click(make_lessons_handout(views, exports), inputs=[component for _, component in views],
                  outputs=handout_file, api_name="lessons_handout")
    warm.click(make_lessons_warm_up(results), outputs=warm_status, api_name="lessons_warm_up")
    return links


def link_to_playground(links: dict[int, gr.Button], tabs: gr.Tabs, playground_views: gr.Tabs) -> None:
    """Each lesson's Playground button opens the Playground tab (one of the app's ``tabs``) at the view it names
    (one of ``playground_views``)."""
    for number, button in links.items():
        view = PLAYGROUND_LINKS[number][1]
        button.click(lambda view=view: (gr.Tabs(selected="playground"), gr.Tabs(selected=view)),
                     outputs=[tabs, playground_views], api_visibility="private", queue=False)
