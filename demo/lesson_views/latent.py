"""The live views of lessons 6 to 10 (Rombach et al. 2022): latent space and the choice of the downsampling
factor, text conditioning, guidance, the models' limits, and two objects by layout. Each ``make_lesson_*``
returns the handler of its Show me button, named after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr
import numpy as np

from demo.common import Shown, Tick, one_step, streamed, user_errors
from demo.figures import compression_figure, labelled_strip
from demo.lesson_views.common import COPIES_SHOWN, LATENT, PIXEL, SHAPES, enlarge, read_picture
from diffusion.studio import (
    COMPRESSION_FIGURE,
    GUIDANCE_SCALES,
    HELD_OUT_PAIRS,
    Compression,
    FactorRow,
    ForwardView,
    GuidanceView,
    NearestCopies,
    PromptTokens,
    SampleRequest,
    Studio,
    Trajectory,
    attention_overlays,
    gate_figures,
)


# ----- 6. latent space -----
def make_lesson_latent(studio: Studio):
    def lesson_latent() -> Shown:
        """Lesson 6: a shapes image, its autoencoder latents and the decoded image, one UNet step's cost in pixels and
        in latents, and Rombach et al.'s trade by downsampling factor (reconstructions and cost at f = 1, 2, 4, 8)."""
        image = read_picture(SHAPES)
        with user_errors():  # every measurement checked and its model loaded here
            views = studio.forward_process(LATENT, image, 0, 0)
            factors = studio.lessons.compression(LATENT, image)
            latent_cost, pixel_cost = studio.lessons.step_cost(LATENT), studio.lessons.step_cost(PIXEL)

        def measured(views: Iterator, factors: Iterator, latent_cost: Iterator, pixel_cost: Iterator) -> Iterator:
            with user_errors():  # the job's steps: the model work; then its pictures, off the model thread
                view, trade = next(views), next(factors)
                costs = [next(latent_cost), trade.rows[0].cost, next(pixel_cost)]
            yield latent_panels(view, trade, costs)

        return Shown((views, factors, latent_cost, pixel_cost), measured)

    return one_step(studio.runner, lesson_latent)


def latent_panels(view: ForwardView, factors: Compression, costs: list) -> tuple:
    """Lesson 6's pictures, tables and figure from its measurements (``factors.rows[0]``: f = 1, the image itself)."""
    original = factors.rows[0].reconstruction
    error = np.abs(original.astype(int) - view.x0.astype(int)).max(-1)
    error_map = np.clip(error * 4, 0, 255).astype(np.uint8)  # x4: small errors made visible
    gallery = [(enlarge(original, 256), "x (64x64x3)"), (enlarge(view.x0, 256), "D(E(x)): the reconstruction"),
               (enlarge(error_map, 256), "|x - D(E(x))|, x4")]
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
    strip = labelled_strip([enlarge(r.reconstruction, 192) for r in factors.rows],
                           [_factor_label(r) for r in factors.rows])
    own = gate_figures(LATENT).get("ceiling.exact")  # the shipped model's own f = 4 autoencoder, trained longer
    longer = None if own is None else ("ldm-shapes' own f = 4\n(trained longer)", own)
    return gallery, note, strip, compression_figure(factors, longer), _compression_note(factors, own)


def _factor_label(row: FactorRow) -> str:
    c, h, w = row.cost.shape
    return "f = 1: the image" if row.factor == 1 else f"f = {row.factor}: {c}x{h}x{w}, {row.psnr:.1f} dB"


def _compression_note(view: Compression, own: float | None = None) -> str:
    """The trade by factor as a table: the latent, one step's compute and time, a sample's time, and the gate's
    bounds (PSNR and the judge on reconstructions), then what it shows, as Rombach et al. found it; ``own``: the
    judge on reconstructions by ``ldm-shapes``' own f = 4 autoencoder, trained longer."""
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
            "shape on ImageNet: f = 1 and 2 slow, f = 4 to 16 the balance, f = 32 too lossy."
            + ("" if own is None else
               f" The three autoencoders had one short training budget (1,000 steps each), which the larger factors "
               f"need more of: `ldm-shapes`' own f = 4 autoencoder, trained longer, reaches **{own:.3f}** (the hollow "
               "diamond). Compare factors at one budget, not these numbers with the shipped model's."))


# ----- 7. text conditioning -----
def make_lesson_text(studio: Studio):
    @streamed(studio.runner)
    def lesson_text(prompt: str, seed: float) -> Shown:
        """Lesson 7: ``prompt`` as the text encoder's tokens, then one image of it (DDIM 25, w = 4), streamed."""
        with user_errors():  # checked and loaded here
            tokens = studio.prompt_tokens(LATENT, prompt)
            request = SampleRequest(sampler="ddim", steps=25, n=1, seed=seed, prompt=str(prompt), guidance_scale=4.0)
            run = studio.trajectory(LATENT, request)
        return Shown((run,), lambda run: text_updates(run, tokens))

    return lesson_text


def text_updates(run: Iterator[tuple], tokens: PromptTokens) -> Iterator[tuple | Tick]:
    """Lesson 7 as it runs: its steps, then where each token attends at the last step."""
    with user_errors():
        for done, total, traj in run:
            if done < total:
                yield Tick((gr.skip(), f"Running: step {done}/{total}"))
    if traj.tokens is None:
        yield [], "This model records no cross-attention."
        return
    unknown = (" Unknown words (each read as the one [UNK] token, so the model never sees which): **" + ", ".join(tokens.unknown_words) + "**."
               if tokens.unknown_words else " Every word is in the vocabulary.")
    note = f"Tokens: {' · '.join(tokens.tokens)}.{unknown} Maps at the last of {total} steps."
    yield attention_overlays(traj.steps[-1], traj.tokens, "all"), note


# ----- 8. guidance -----
def make_lesson_guidance(studio: Studio):
    @streamed(studio.runner)
    def lesson_guidance(prompt: str, seed: float) -> Shown:
        """Lesson 8: ``prompt`` at several guidance scales from one cached pair of predictions per step, streamed."""
        with user_errors():  # checked and loaded here
            request = SampleRequest(sampler="ddim", steps=25, n=1, seed=seed, prompt=str(prompt), guidance_scale=4.0)
            run = studio.lessons.guided_run(LATENT, request, GUIDANCE_SCALES)
        return Shown((run,), lambda run: guidance_updates(run, studio.lessons.guided_step))

    return lesson_guidance


def guidance_updates(run: Iterator[tuple | GuidanceView], guided_step: Callable[[int], int]) -> Iterator[tuple | Tick]:
    """Lesson 8 as it runs: its steps, then the guidance decomposition of its step ``guided_step(steps)`` (made in the
    same job, from the run's own record: :meth:`diffusion.lessons.LessonViews.guided_run`)."""
    with user_errors():
        for item in run:
            if isinstance(item, GuidanceView):
                view = item
            elif item[0] < item[1]:
                yield Tick((gr.skip(), f"Running: step {item[0]}/{item[1]}"))
            else:
                total = item[1]
    index = guided_step(total)
    parts = [(view.uncond, "ε(z_t, ∅)"), (view.text, "ε(z_t, y)"),
             (view.direction, f"direction ×{view.direction_scale:.0f}")]
    parts += [(img, f"x̂0, w = {w:g}") for w, img in zip(view.scales, view.pred_x0, strict=True)]
    yield parts, (f"Step {index + 1} of {total}: the same pair of predictions, combined with each $w$ into the "
                  "predicted $\\hat x_0$. The guidance direction $\\epsilon_\\theta(z_t, y) - \\epsilon_\\theta(z_t, "
                  f"\\varnothing)$ is small (RMS {view.direction_norm:.4f}): its picture is drawn "
                  f"×{view.direction_scale:.0f}, so that all but its largest 1% of values fit between black and white.")


# ----- 9. limits -----
def copies_pictures(copies: NearestCopies) -> list[tuple[np.ndarray, str]]:
    """Each sample beside its nearest training digit (a 2-pixel white gap), enlarged, with the distance."""
    items = []
    for sample, near, d in zip(copies.samples, copies.nearest, copies.distances, strict=True):
        pair = np.concatenate([sample, np.full((sample.shape[0], 2), 255, np.uint8), near], axis=1)
        mark = " · near copy" if d < copies.threshold else ""
        items.append((enlarge(pair), f"distance {d:.2f}{mark}"))
    return items


def make_lesson_limits(studio: Studio):
    @streamed(studio.runner)
    def lesson_limits(seed: float) -> Shown:
        """Lesson 9: where the plain models fail (a colour-shape pair never seen together, two objects) and 16 new digits beside their nearest training digits."""
        colour, shape = sorted(HELD_OUT_PAIRS)[0]
        prompts = [f"a {colour} {shape}", "a red circle left of a blue square"]
        with user_errors():  # every run checked and loaded here
            plain = [(prompt, studio.generate(LATENT, SampleRequest(sampler="ddim", steps=25, n=4, seed=seed,
                                                                    prompt=prompt, guidance_scale=4.0, layout="off"),
                                              previews=0))  # the plain model's limits (lesson 10 draws by layout)
                     for prompt in prompts]
            # memorisation: fresh digits beside their nearest training digits
            digits_run = studio.generate(PIXEL, SampleRequest(sampler="ddim", steps=25, n=COPIES_SHOWN, seed=seed),
                                         previews=0)
        return Shown((*(run for _, run in plain), digits_run),
                     lambda *streams: limits_updates(list(zip(prompts, streams[:-1], strict=True)), streams[-1],
                                                     int(seed), studio.lessons.nearest_copies))

    return lesson_limits


def limits_updates(plain: list[tuple[str, Iterator]], digits_run: Iterator, seed: int,
                   nearest: Callable[[np.ndarray], NearestCopies]) -> Iterator[tuple | Tick]:
    """Lesson 9 as it runs: the two plain prompts, then the digits beside their nearest training digits
    (``nearest``, measured off the model thread: it compares pixels, no model)."""
    prompts = [prompt for prompt, _ in plain]
    gallery = []
    with user_errors():
        for prompt, run in plain:
            for update in run:
                if not update.done:
                    yield Tick((gr.skip(), gr.skip(), f"Running: {prompt!r}, step {update.step}/{update.num_steps}"))
            gallery.append((update.grid, prompt))
        for update in digits_run:
            if not update.done:
                yield Tick((gr.skip(), gr.skip(), f"Running: {COPIES_SHOWN} digits, step {update.step}/{update.num_steps}"))
    yield limits_panels(gallery, update.images, prompts, seed, nearest)


def limits_panels(gallery: list, digits: np.ndarray, prompts: list[str], seed: int,
                  nearest: Callable[[np.ndarray], NearestCopies]) -> tuple:
    """Lesson 9's galleries and note: the plain prompts' grids, and ``digits`` beside their nearest training digits."""
    note = (f"{prompts[0]!r}: a colour-shape pair never shown together in training. {prompts[1]!r}: two objects "
            f"and a relation, the weak spot. Seed {seed}, 4 images each.\n\n")
    if digits.shape[1:] != (32, 32):  # another DDPM than the embedded digit model
        return gallery, [], note + (f"**Memorisation** compares 32x32 digits with the training digits; this DDPM makes "
                                    f"{digits.shape[1]}x{digits.shape[2]} images.")
    with user_errors():
        copies = nearest(digits)
    held = copies.held_out_distances
    return gallery, copies_pictures(copies), note + (
        f"**Memorisation.** {COPIES_SHOWN} new digits, each beside its nearest of the 4,000 training digits (L2 over "
        f"pixels in [0, 1]): median distance **{np.median(copies.distances):.2f}** (closest "
        f"{copies.distances.min():.2f}). The {len(held)} held-out digits, never trained on, are this far from their "
        f"nearest training digit: median **{np.median(held):.2f}**, closest {copies.threshold:.2f}. "
        f"**{copies.near_copies} of {COPIES_SHOWN}** samples are nearer to a training digit than that closest "
        "held-out digit (near copies): a copier would sit far below the held-out distances.")


# ----- 10. two objects by layout -----
LAYOUT_WORDS = ("left", "right", "above", "below", *("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"),
                *("circle", "square", "triangle", "star", "heart", "diamond"))


def make_lesson_layout(studio: Studio):
    @streamed(studio.runner)
    def lesson_layout(prompt: str, seed: float) -> Shown:
        """The same prompt and seed with the layout off (and where its words attend) and on (its regions)."""
        with user_errors():  # both runs checked and loaded here
            runs = {mode: studio.trajectory(LATENT, SampleRequest(sampler="ddim", steps=25, n=1, seed=seed,
                                                                  prompt=str(prompt), guidance_scale=4.0, layout=mode))
                    for mode in ("off", "auto")}
        return Shown((runs["off"], runs["auto"]),
                     lambda off, auto: layout_updates(studio, {"off": off, "auto": auto}, str(prompt), int(seed)))

    return lesson_layout


def layout_updates(studio: Studio, runs: dict[str, Iterator[tuple]], prompt: str,
                   seed: int) -> Iterator[tuple | Tick]:
    """Lesson 10 as it runs: the plain run, then the layout run; the galleries are drawn off the model thread."""
    done_runs = {}
    with user_errors():
        for mode, run in runs.items():
            for done, total, traj in run:
                if done < total:
                    yield Tick((gr.skip(), f"Running: layout {mode}, step {done}/{total}"))
            done_runs[mode] = traj
    yield layout_panels(studio, done_runs["off"], done_runs["auto"], prompt, seed)


def layout_panels(studio: Studio, plain: Trajectory, planned: Trajectory, prompt: str, seed: int) -> tuple:
    """Lesson 10's gallery and note: the plain run and where its words attend, then the layout run's regions."""
    gallery = [(plain.final, "layout off: the plain model")]
    if plain.tokens is not None and plain.steps[-1].attention is not None:
        index = 2 * len(plain.steps) // 3  # where the objects have formed
        gallery += [(image, f"layout off, step {index + 1}: {label}")
                    for image, label in attention_overlays(plain.steps[index], plain.tokens, "all")
                    if label.split(" · ")[0] in LAYOUT_WORDS]
    regions = planned.steps[len(planned.steps) // 3].regions
    if regions is None:
        return gallery, (f"{prompt!r} names no two objects the parser can read (for example "
                         "*a red circle left of a blue square*), so the layout changes nothing.")
    gallery.append((planned.final, "layout on: one region per object"))
    for k, region in enumerate(regions, 1):
        gallery += [(region.weight, f"region {k}"), (region.pred_x0, f"{region.caption}: predicted x0")]
    return gallery, (f"Seed {seed}. Layout: {studio.layouts(planned.request)[0].describe()}. The attention "
                     "maps are the plain run's; the regions and their predictions are the layout run's, at step "
                     f"{len(planned.steps) // 3 + 1} of {len(planned.steps)}.")
