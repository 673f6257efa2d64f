"""Replaying a run: an uploaded JSON recipe or a shared link (``?run=``) sets the controls and runs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from demo.common import Shown, Tick, streamed, user_errors
from demo.lab.run import make_lab_run
from demo.lab.session import LabSession, recorded_run
from diffusion.studio import MAX_LAB_IMAGES, MAX_RECIPE_CHARS, Recipe, StateBudget, Studio


def recipe_controls(recipe: Recipe, notes: list[str], what: str) -> tuple:
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
        return recipe_controls(recipe, notes, "Recipe loaded")

    return lab_load_recipe


def make_lab_read_link(studio: Studio):
    def lab_read_link(link: str) -> tuple:
        """The step lab's controls for a shared run: a link as pasted (``...?run=...``) or its parameter alone."""
        if not link or not str(link).strip():
            raise gr.Error("Paste the link of a shared run (it has ?run= in it).")
        with user_errors():
            recipe, notes = studio.read_link(link)
        return recipe_controls(recipe, notes, "Shared run")

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
    return recorded_run(session).recipe.to_link()


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


def headed(updates: Iterator[Any], head: str) -> Iterator[Any]:
    """A run's updates with ``head`` before each status line (the last output), Ticks and drawn updates too."""

    def with_head(value: tuple) -> tuple:
        return value[:-1] + (head + value[-1],)

    for update in updates:
        if isinstance(update, Tick):
            yield Tick(with_head(update.value), update.preview)
        else:
            yield with_head(update)


def make_lab_replay(studio: Studio, budget: StateBudget, shared: bool = False):
    """The run of an uploaded recipe (``shared``: of a shared run's link), read from the file (the link) itself on
    the server (not from the controls, which the browser may not have updated yet when the run starts)."""
    load = make_lab_read_link(studio) if shared else make_lab_load_recipe(studio)
    run = make_lab_run(studio, budget).__wrapped__

    @streamed(studio.runner)
    def lab_replay(path: str | None) -> Shown:
        """The run, each status headed by the recipe's note (what is being replayed stays on screen: the
        note would otherwise last only until the first step's status, too briefly to read)."""
        *controls, note = load(path)
        head = note.replace(" Running it.", "") + " "
        return run(*controls[:8]).headed(lambda updates: headed(updates, head))

    return lab_replay
