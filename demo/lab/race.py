"""The sampler race: several samplers from one x_T, their predicted x0 at the same noise levels."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from demo.common import LATEX, MODEL_CONCURRENCY, Shown, Tick, card_request, readable, streamed, user_errors
from demo.lab.session import Controls
from diffusion.studio import RACE_LEVELS, RaceLane, Studio, labelled_race_grid, race_milestones


def race_table(lanes: list[RaceLane]) -> str:
    """The lanes as a Markdown table: sampler, steps, model calls, wall time, state."""
    rows = ["| sampler | steps | model calls | wall time | |", "|---|---|---|---|---|"]
    rows += [f"| {lane.sampler} | {lane.steps} | {lane.model_calls} | {lane.wall_s:.2f} s | "
             f"{'done' if lane.done else ('running' if lane.model_calls else 'waiting')} |" for lane in lanes]
    return "\n".join(rows)


def make_race(studio: Studio):
    @streamed(studio.runner)
    def race(model_id: str, seed: float, prompt: str, guidance: float) -> Shown:
        """The sampler race: the same seed through DDPM, DDIM, Euler and DPM-Solver++ on ``model_id``, streamed lane by lane."""
        with user_errors():
            request = card_request(studio.card(model_id), "ddim", 50, seed, prompt=prompt, guidance=guidance)
            lanes = studio.race(str(model_id), request)  # checked and loaded here, before the model thread
        return Shown((lanes,), lambda lanes: readable(race_updates(lanes)))

    return race


def race_updates(race: Iterator[list[RaceLane]]) -> Iterator[tuple]:
    """The race's grid and table whenever a lane passes a milestone; a Tick on the other steps."""
    shown = None
    for lanes in race:
        if race_milestones(lanes) == shown:
            yield Tick((gr.skip(), gr.skip()))  # one step on, nothing new to draw (a cancel stops here)
            continue
        shown = race_milestones(lanes)
        yield labelled_race_grid(lanes), race_table(lanes)


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
