"""Tab 2: the reverse process one step at a time, with the schedule and the equations."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from demo.common import LATEX, MODEL_CONCURRENCY, as_float, as_int, as_seed, user_errors  # noqa: E402
from demo.tab_sampling import SAMPLER_CHOICES  # noqa: E402
from demo.theory import STEPS  # noqa: E402
from diffusion.pipeline import SampleRequest  # noqa: E402
from diffusion.service import ScheduleCurves, StepView, Studio, Trajectory  # noqa: E402

MAX_VIEW_STEPS = 1000


@dataclass
class StepsSession:
    """Per-user state: the recorded trajectory and the model's schedule."""

    trajectory: Trajectory
    curves: ScheduleCurves
    sampler: str


def schedule_figure(curves: ScheduleCurves, timestep: float | None) -> Figure:
    """alpha-bar_t and log-SNR(t) over the training timesteps, the current step marked."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 2.6), dpi=90)
    ax1.plot(curves.timesteps, curves.alphas_cumprod, color="tab:blue")
    ax1.set_title(r"$\bar\alpha_t$ (signal kept)")
    ax2.plot(curves.timesteps, curves.log_snr, color="tab:orange")
    ax2.set_title(r"log SNR$(t)=\log\,\bar\alpha_t/(1-\bar\alpha_t)$")
    for ax in (ax1, ax2):
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        if timestep is not None:
            ax.axvline(timestep, color="crimson", lw=1.5)
    fig.tight_layout()
    plt.close(fig)
    return fig


def step_equation(view: StepView, sampler: str, num_steps: int) -> str:
    """The sampler's update for this step, typeset with this step's numbers."""
    ab, ab_prev = view.alpha_prod_t, view.alpha_prod_t_prev
    snr = ab / max(1e-12, 1 - ab)
    head = (f"**Step {view.index + 1} of {num_steps}**, $t = {view.timestep:.0f}$: "
            f"$\\beta_t = {view.beta_t:.5f}$, $\\bar\\alpha_t = {ab:.5f}$, "
            f"SNR $= {snr:.4g}$, $\\bar\\alpha_{{\\text{{prev}}}} = {ab_prev:.5f}$\n\n")
    x0 = (f"$$\\hat x_0 = \\frac{{x_t - {math.sqrt(1 - ab):.4f}\\,\\epsilon_\\theta}}{{{math.sqrt(ab):.4f}}}$$\n\n")
    if sampler == "ddpm":
        alpha_t = ab / ab_prev  # the step's effective alpha_t when skipping timesteps
        beta_t = 1 - alpha_t
        sigma_t = math.sqrt(max(0.0, (1 - ab_prev) / (1 - ab) * beta_t))
        body = ("DDPM Algorithm 2, line 4:\n"
                f"$$x_{{t-1}} = \\frac{{1}}{{\\sqrt{{\\alpha_t}}}}\\Big(x_t - \\frac{{\\beta_t}}{{\\sqrt{{1-\\bar\\alpha_t}}}}"
                f"\\epsilon_\\theta\\Big) + \\sigma_t z = {1 / math.sqrt(alpha_t):.4f}\\,\\big(x_t - "
                f"{beta_t / math.sqrt(1 - ab):.4f}\\,\\epsilon_\\theta\\big) + {sigma_t:.4f}\\,z$$")
    elif sampler == "ddim":
        body = ("DDIM ($\\eta = 0$), Song et al. 2021, Eq. 12:\n"
                f"$$x_{{t-1}} = \\sqrt{{\\bar\\alpha_{{\\text{{prev}}}}}}\\,\\hat x_0 + "
                f"\\sqrt{{1-\\bar\\alpha_{{\\text{{prev}}}}}}\\,\\epsilon_\\theta = {math.sqrt(ab_prev):.4f}\\,\\hat x_0 + "
                f"{math.sqrt(1 - ab_prev):.4f}\\,\\epsilon_\\theta$$")
    else:
        body = (f"The {sampler} sampler builds $x_{{t-1}}$ from this $\\hat x_0$ and the noise estimate "
                "(see the Step-by-step lab for its full update).")
    return head + x0 + body


def make_run_handler(studio: Studio):
    def run_steps(model_id: str, sampler: str, steps: float, seed: float, prompt: str,
                  guidance: float) -> Iterator[tuple]:
        with user_errors():
            card = studio.card(str(model_id))
            text = card.kind == "latent-text"
            request = SampleRequest(
                sampler=str(sampler), steps=as_int(steps, "Steps", 1, MAX_VIEW_STEPS), n=1, seed=as_seed(seed),
                prompt=str(prompt or "") if text else "",
                guidance_scale=as_float(guidance, "Guidance", 0.0, 30.0) if text else 1.0,
            )
            studio.validate(card.id, request)
            curves = studio.schedule(card.id)
            for done, total, traj in studio.trajectory(card.id, request):
                view = traj.steps[-1]
                if done < total:
                    yield (gr.skip(), gr.skip(), view.x_t, view.noise, view.pred_x0, gr.skip(), gr.skip(),
                           f"Running: step {done}/{total}, {traj.wall_s:.1f} s")
            session = StepsSession(traj, curves, request.sampler)
            last = traj.steps[-1]
            yield (session, gr.Slider(minimum=1, maximum=total, value=total, step=1, interactive=True),
                   last.x_t, last.noise, last.pred_x0, schedule_figure(curves, last.timestep),
                   step_equation(last, request.sampler, total),
                   f"Done: {total} steps in {traj.wall_s:.2f} s. Drag the slider to revisit any step.")

    return run_steps


def show_step(session: StepsSession | None, step: float) -> tuple:
    """Show recorded step ``step`` (1-based) of the user's trajectory."""
    if session is None:
        raise gr.Error("Run the reverse process first.")
    steps = session.trajectory.steps
    index = as_int(step, "Step", 1, len(steps)) - 1
    view = steps[index]
    return (view.x_t, view.noise, view.pred_x0, schedule_figure(session.curves, view.timestep),
            step_equation(view, session.sampler, len(steps)))


def build_steps_tab(studio: Studio) -> None:
    cards = studio.cards()
    default = studio.cards("pixel")[0]
    # ----- layout -----
    session = gr.State(None)
    gr.Markdown(STEPS, latex_delimiters=LATEX)
    with gr.Row():
        model = gr.Dropdown([(c.title, c.id) for c in cards], value=default.id, label="Model", scale=2)
        sampler = gr.Dropdown(SAMPLER_CHOICES, value="ddpm", label="Sampler", scale=1)
        steps = gr.Slider(1, MAX_VIEW_STEPS, value=50, step=1, label="Steps", scale=2)
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=1)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt (text models only)", scale=3)
        guidance = gr.Slider(0.0, 15.0, value=4.0, step=0.5, label="Guidance (text models)", scale=1)
        run = gr.Button("Run the reverse process", variant="primary", scale=1)
    status = gr.Markdown(elem_id="steps-status")
    slider = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False, elem_id="steps-slider")
    with gr.Row():
        panel = {"format": "png", "interactive": False, "height": 260, "elem_classes": ["pixelated"]}
        x_t = gr.Image(label="x_t", elem_id="steps-xt", **panel)
        noise = gr.Image(label="predicted noise ε_θ(x_t, t)", **panel)
        x0 = gr.Image(label="predicted x0", elem_id="steps-x0", **panel)
    equation = gr.Markdown(latex_delimiters=LATEX, elem_id="steps-equation")
    plot = gr.Plot(label="Noise schedule")
    # ----- events -----
    run.click(make_run_handler(studio), inputs=[model, sampler, steps, seed, prompt, guidance],
              outputs=[session, slider, x_t, noise, x0, plot, equation, status], api_name="steps_run",
              **MODEL_CONCURRENCY)
    slider.change(show_step, inputs=[session, slider], outputs=[x_t, noise, x0, plot, equation],
                  api_name="steps_show", show_progress="hidden")
