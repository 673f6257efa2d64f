"""The live views of lessons 1 to 5 (Ho et al. 2020): the forward process, what the network learns, sampling
step by step, fewer steps (the sampler race), and noise and determinism. Each ``make_lesson_*`` returns the
handler of its Show me button, named after its ``api_name``.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from demo.common import FIGURE_LOCK, Shown, Tick, one_step, shown, streamed, user_errors
from demo.figures import (
    BLUE,
    GREY,
    labelled_strip,
    progressive_grid,
    readable,
    schedule_figure,
    shared_latent_grid,
    update_strip,
)
from demo.lab.race import race_table
from demo.lesson_views.common import DIGIT, PIXEL, enlarge, read_picture
from diffusion.studio import (
    PROGRESSIVE_FIGURE,
    SHARED_LATENT_FIGURE,
    DenoisingError,
    SampleRequest,
    Studio,
    labelled_race_grid,
    make_grid,
    race_milestones,
    update_latex,
)


# ----- 1. the forward process -----
def make_lesson_forward(studio: Studio):
    def lesson_forward(seed: float) -> Shown:
        """Lesson 1: one digit noised to five timesteps by q(x_t | x_0) (DDPM eq. 4), with the schedule; ``seed`` draws the noise."""
        with user_errors():
            curves = studio.schedule(PIXEL)  # loads the model (its scheduler config)
            T = len(curves.timesteps)
            ts = [0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
            strips = studio.forward_strip(PIXEL, read_picture(DIGIT), ts, seed)  # checked here
            family = studio.schedule_family(T)
        ab = [float(curves.alphas_cumprod[t]) for t in ts]
        note = " · ".join(f"$t = {t}$: $\\bar\\alpha_t = {a:.3f}$, SNR = {a / max(1 - a, 1e-12):.3g}"
                          for t, a in zip(ts, ab, strict=True))
        return shown(strips, lambda strip: (labelled_strip([enlarge(s) for s in strip], [f"t = {t}" for t in ts]),
                                            schedule_figure(curves, None, family), note))  # drawn off the model thread

    return one_step(studio.runner, lesson_forward)


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
    def lesson_denoising() -> Shown:
        """Lesson 2: the DDPM's noise-prediction error against t on 64 held-out digits, with its predicted noise and x0 at five t."""
        with user_errors():
            results = studio.lessons.denoising_error(PIXEL)  # checked and loaded here
        return shown(results, denoising_panels)

    return one_step(studio.runner, lesson_denoising)


def denoising_panels(result: DenoisingError) -> tuple:
    """Lesson 2's figure, its predicted noise and x0 at five t, and its note."""
    gallery = []
    for t, (x_t, eps, x0) in zip(result.shown, result.examples, strict=True):
        gallery += [(enlarge(x_t), f"x_t, t = {t}"), (enlarge(eps), f"predicted noise, t = {t}"),
                    (enlarge(x0), f"predicted x0, t = {t}")]
    hard, easy = int(np.argmax(result.error)), int(np.argmin(result.error))
    note = (f"Measured on {result.images} held-out digits (never trained on), one noise draw each: the error is "
            f"{result.error[hard]:.3f} at $t = {result.timesteps[hard]}$ and {result.error[easy]:.4f} at "
            f"$t = {result.timesteps[easy]}$.")
    return error_figure(result.timesteps, result.error, result.spread), gallery, note


# ----- 3. sampling -----
def make_lesson_sampling(studio: Studio):
    @streamed(studio.runner)
    def lesson_sampling(seed: float) -> Shown:
        """Lesson 3: one digit sampled by DDPM (Algorithm 2) in 50 steps, streamed step by step; ``seed`` in [0, 2^32 - 1]."""
        with user_errors():  # both runs checked and loaded here
            run = studio.trajectory(PIXEL, SampleRequest(sampler="ddpm", steps=50, n=1, seed=seed))
            figure = studio.lessons.progressive(PIXEL, SampleRequest(sampler="ddpm", steps=50, n=4, seed=seed))
        return Shown((run, figure), lambda run, figure: sampling_updates(run, figure, int(seed)))

    return lesson_sampling


def sampling_updates(run: Iterator[tuple], figure: Iterator[tuple], seed: int) -> Iterator[tuple | Tick]:
    """Lesson 3 as it runs: the digit's steps, then Ho et al.'s Fig. 6 live (every step yielded, so a cancel stops
    within one)."""
    with user_errors():
        for done, total, traj in run:
            if done < total:
                yield Tick((gr.skip(), gr.skip(), f"Running: step {done}/{total}", gr.skip(), gr.skip()))
    picks = np.linspace(0, total - 1, 8).round().astype(int)
    rows = [enlarge(traj.steps[i].x_t) for i in picks] + [enlarge(traj.steps[i].pred_x0) for i in picks]
    middle = int(picks[len(picks) // 2])
    return_note = (f"Top: $x_t$; bottom: $\\hat x_0$, at steps {', '.join(str(i + 1) for i in picks)} of {total} "
                   f"(DDPM, seed {int(seed)}, {traj.wall_s:.2f} s). The update of step {middle + 1}:")
    update = traj.steps[middle].update
    panels = (make_grid(np.stack(rows), ncols=len(picks)),
             update_latex(traj.terms[middle], traj.terms[middle - 1] if middle else None), return_note,
             None if update is None else update_strip(update))
    yield (*panels, gr.skip())
    with user_errors():  # then Ho et al.'s Fig. 6 live: four samples, their x0 estimate as t falls
        for done, total, view in figure:
            if view is None:
                yield Tick((gr.skip(), gr.skip(), return_note + f" Progressive generation: step {done}/{total}",
                            gr.skip(), gr.skip()))
    yield (*panels[:2], return_note + f" Below: progressive generation, as in [Ho et al. 2020, Fig. 6]"
           f"({PROGRESSIVE_FIGURE}): four samples (seed {int(seed)}), each one's $\\hat x_0$ as $t$ falls; the "
           "rough shape comes first, the details last.", panels[3], progressive_grid(view))


# ----- 4. fewer steps -----
RACE_NOTE = ("\n\nAll lanes start from the same $x_T$. DDIM ($\\eta = 0$), DPM-Solver++ and Euler all solve the same "
             "deterministic probability-flow ODE, so they usually end on the same digit; DDPM adds fresh noise at every step "
             "(its $\\sigma_t z$), follows another path from the same start, and may end on another digit.")


def make_lesson_race(studio: Studio):
    @streamed(studio.runner)
    def lesson_race(seed: float) -> Shown:
        """Lesson 4: the same seed through four samplers side by side (DDPM, DDIM, Euler, DPM-Solver++), streamed."""
        with user_errors():  # checked and loaded here
            race = studio.race(PIXEL, SampleRequest(sampler="ddim", steps=50, n=1, seed=seed))
        return Shown((race,), race_updates)

    return lesson_race


def race_updates(race: Iterator[list]) -> Iterator[tuple | Tick]:
    """Lesson 4 as it runs: the grid and table whenever a lane reaches a new milestone."""
    milestones = None
    with user_errors():
        for lanes in race:
            if race_milestones(lanes) == milestones:
                yield Tick((gr.skip(), gr.skip()))
                continue
            milestones = race_milestones(lanes)
            yield labelled_race_grid(lanes), race_table(lanes) + RACE_NOTE


# ----- 5. noise and determinism -----
def make_lesson_determinism(studio: Studio):
    @streamed(studio.runner)
    def lesson_determinism(seed: float) -> Shown:
        """Lesson 5: DDIM with eta 0 twice (equal), then eta 0.5 and 1 (different): determinism against noise, same ``seed``."""
        titles = [("DDIM, eta = 0", 0.0), ("the same, again", 0.0), ("DDIM, eta = 0.5", 0.5), ("DDIM, eta = 1", 1.0)]
        with user_errors():  # every run checked and loaded here; each runs when its turn in the view comes
            runs = [(title, studio.generate(PIXEL, SampleRequest(sampler="ddim", steps=50, n=4, seed=seed, eta=eta),
                                            previews=0)) for title, eta in titles]
            shared = studio.lessons.shared_latent(PIXEL, SampleRequest(sampler="ddpm", steps=50, n=1, seed=seed))
        names = [title for title, _ in runs]
        return Shown((*(run for _, run in runs), shared),
                     lambda *streams: determinism_updates(list(zip(names, streams[:-1], strict=True)), streams[-1],
                                                          int(seed)))

    return lesson_determinism


def determinism_updates(runs: list[tuple[str, Iterator]], shared_run: Iterator[tuple],
                        seed: int) -> Iterator[tuple | Tick]:
    """Lesson 5 as it runs: the four DDIM runs one after the other, then Ho et al.'s Fig. 7."""
    grids = []
    with user_errors():
        for title, run in runs:
            for update in run:
                if not update.done:
                    yield Tick((gr.skip(), f"Running: {title}, step {update.step}/{update.num_steps}"))
            grids.append((title, update.images))
    same = np.array_equal(grids[0][1], grids[1][1])
    changed = [int(np.sum(np.any(g[1] != grids[0][1], axis=(1, 2)))) for g in grids[2:]]
    gallery = [(enlarge(make_grid(images, ncols=4), 256), title) for title, images in grids]
    with user_errors():  # Ho et al.'s Fig. 7 live: one DDPM run, continued three times from its x_t
        for done, total, shared in shared_run:
            if shared is None:
                yield Tick((gr.skip(), f"Running: samples that share an x_t, step {done}/{total}"))
    gallery.append((shared_latent_grid(shared), "samples that share an x_t (Ho et al. 2020, Fig. 7); rows: t = "
                    + ", ".join(f"{t:.0f}" for t in shared.timesteps)))
    note = (f"Seed {seed}, 4 images each, one starting noise $x_T$ for all runs. Run twice: "
            f"**{'identical, byte for byte' if same else 'DIFFERENT (a reproducibility bug)'}**. "
            f"Images that differ from eta = 0: {changed[0]} of 4 at eta = 0.5, {changed[1]} of 4 at eta = 1. "
            "The eta = 0.5 and eta = 1 runs draw their step noise $z$ from the same seeded generator in the same "
            "order: they share every noise draw and differ only in its scale $\\sigma_t$, so they often end on the "
            "same digits as each other. Last, as in [Ho et al. 2020, Fig. 7](" + SHARED_LATENT_FIGURE + "): one "
            "DDPM run, continued three times from its $x_t$ with fresh noise. From a late $x_t$ (small $t$) the "
            "samples agree on almost everything, from an early one only on the rough shape: what $x_t$ has "
            "already decided.")
    yield gallery, note
