"""Only model work on the model thread: every model event checks its request and loads its models in the request's
own handler, before its job enters the runner; a bad request never enters it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest


def fresh_studio(tiny_ddpm_dir: Path, tiny_sd_dir: Path, tiny_autoencoders_dir: Path):
    """The tiny models standing in for the embedded ones (as the ``serve`` fixture does), nothing loaded yet."""
    from diffusion.registry import Registry
    from diffusion.studio import Studio
    from tests.tiny import TINY_SD_SIDE

    registry = Registry.default([tiny_sd_dir])
    registry.with_source("ddpm-mnist", str(tiny_ddpm_dir))
    registry.with_source("ldm-shapes", str(tiny_sd_dir), resolution=TINY_SD_SIDE)
    return Studio(registry, device="cpu", precision="fp32", cache_bytes=0, autoencoders=tiny_autoencoders_dir)


def run(handler, *args) -> list:  # noqa: ANN001 - a streamed (async generator) or one-step (coroutine) handler
    async def go() -> list:
        result = handler(*args)
        if hasattr(result, "__aiter__"):
            return [update async for update in result]
        return [await result]

    return asyncio.run(go())


def where_it_works(studio, monkeypatch) -> dict[str, list[str]]:  # noqa: ANN001
    """Record the threads on which models are loaded (a miss of the model store: a hub model would download here),
    requests are checked (``Studio.prepare_all``) and jobs are submitted."""
    import diffusion.loading

    seen: dict[str, list[str]] = {"load": [], "check": [], "submit": []}
    load, prepare_all, submit = diffusion.loading.load_pipeline, studio.prepare_all, studio.runner.submit

    def note(kind: str, call, *args, **kwargs):  # noqa: ANN001, ANN202
        seen[kind].append(threading.current_thread().name)
        return call(*args, **kwargs)

    monkeypatch.setattr(diffusion.loading, "load_pipeline", lambda *a, **k: note("load", load, *a, **k))
    studio.prepare_all = lambda *a, **k: note("check", prepare_all, *a, **k)
    studio.runner.submit = lambda job: note("submit", submit, job)
    return seen


def lesson_views() -> list[tuple[str, object, tuple]]:
    """Each lesson's Show me: (name, its maker, given a Studio, and its inputs)."""
    from demo.lesson_views.ddpm import (make_lesson_denoising, make_lesson_determinism, make_lesson_forward,
                                        make_lesson_race, make_lesson_sampling)
    from demo.lesson_views.latent import (make_lesson_guidance, make_lesson_latent, make_lesson_layout,
                                          make_lesson_limits, make_lesson_text)

    return [("lesson 1", make_lesson_forward, (0,)), ("lesson 2", make_lesson_denoising, ()),
            ("lesson 3", make_lesson_sampling, (0,)), ("lesson 4", make_lesson_race, (0,)),
            ("lesson 5", make_lesson_determinism, (0,)), ("lesson 6", make_lesson_latent, ()),
            ("lesson 7", make_lesson_text, ("a red circle", 0)), ("lesson 8", make_lesson_guidance, ("a red circle", 0)),
            ("lesson 9", make_lesson_limits, (0,)),
            ("lesson 10", make_lesson_layout, ("a red circle left of a blue square", 0))]


def ui_code_on(thread_name: str) -> tuple[list[str], object]:
    """A profile function (for ``threading.setprofile``) that records every function of ``demo/`` called on the
    thread named ``thread_name``, and the list it records in."""
    seen: list[str] = []
    demo = str(Path(__file__).resolve().parents[1] / "demo")

    def profile(frame, event, arg) -> None:  # noqa: ANN001
        if event == "call" and frame.f_code.co_filename.startswith(demo) \
                and threading.current_thread().name == thread_name:
            seen.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    return seen, profile


@pytest.mark.slow
def test_every_lesson_and_one_step_view_loads_and_checks_off_the_model_thread(
        tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir, monkeypatch) -> None:
    """Each view on a fresh Studio (nothing loaded): its models load, and its runs are checked, in the request's
    handler; the runner's thread ("model-steps") only runs the jobs, and no UI code at all (the views that map the
    Studio's items to updates run on the request's own thread)."""
    from demo.lab.forward import make_forward_show
    from demo.lab.run import make_lab_run
    from demo.lab.schedules import make_schedules_show
    from demo.tab_playground import make_playground_forward
    from demo.tab_sampling import make_sample_handler
    from diffusion.studio import ExportDir, StateBudget

    image = np.full((20, 20, 3), 120, np.uint8)
    views = [("forward", make_forward_show, ("ldm-shapes", image, 40, 0)),
             ("schedules", make_schedules_show, ("ddpm-mnist", 10, None, 0)),
             ("playground forward", lambda s: make_playground_forward(s, ExportDir()),
              ("moons", "", None, "cosine", 50, 0)),
             ("step lab run", lambda s: make_lab_run(s, StateBudget()), ("ldm-shapes", "ddim", 5, 0, "a red circle", 3.0)),
             ("sample", make_sample_handler, ("ddpm-mnist", "ddim", 5, 0.0, 2, 0)), *lesson_views()]
    for name, make, args in views:
        studio = fresh_studio(tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir)
        seen = where_it_works(studio, monkeypatch)
        ui_code, profile = ui_code_on(studio.runner.name)
        threading.setprofile(profile)  # the runner's thread starts with this view's first job
        try:
            updates = run(make(studio), *args)
        finally:
            threading.setprofile(None)
        assert not ui_code, f"{name} ran UI code on the model thread: {sorted(set(ui_code))}"
        assert updates and updates[-1] is not None, name
        model_thread = studio.runner.name
        assert seen["submit"], f"{name}: no job entered the runner"
        assert model_thread not in seen["load"], f"{name} loaded a model on the model thread: {seen}"
        assert model_thread not in seen["check"], f"{name} checked a request on the model thread: {seen}"
        if name not in ("playground forward",):
            assert seen["load"], f"{name} loaded nothing on a fresh Studio"


def test_a_bad_request_to_a_one_step_view_never_enters_the_runner(tiny_ddpm_dir, tiny_sd_dir,
                                                                   tiny_autoencoders_dir, monkeypatch) -> None:
    import gradio as gr

    from demo.lab.forward import make_forward_show
    from demo.lesson_views.ddpm import make_lesson_sampling

    studio = fresh_studio(tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir)
    seen = where_it_works(studio, monkeypatch)
    with pytest.raises(gr.Error, match="t must be"):
        run(make_forward_show(studio), "ddpm-mnist", np.zeros((8, 8, 3), np.uint8), 10_000, 0)
    with pytest.raises(gr.Error, match="Seed"):
        run(make_lesson_sampling(studio), -1)
    assert seen["submit"] == []  # refused in the request's handler: nothing entered the runner
    assert run(make_forward_show(studio), "ddpm-mnist", np.zeros((8, 8, 3), np.uint8), 10, 0)[0][0].shape == (8, 8)
    assert len(seen["submit"]) == 1


def test_checks_and_loading_happen_in_the_request_not_on_the_model_thread(tiny_ddpm_dir) -> None:
    """A model event's request is checked and its model loaded in the request's own handler; only model work
    enters the runner, and a bad request never does."""
    import gradio as gr

    from demo.tab_sampling import make_sample_handler
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    studio = Studio(Registry.default([tiny_ddpm_dir]), device="cpu", cache_bytes=0)
    loaded_on: list[str] = []
    submitted: list[str] = []
    get, submit = studio.store.get, studio.runner.submit
    studio.store.get = lambda model_id: (loaded_on.append(threading.current_thread().name), get(model_id))[1]
    studio.runner.submit = lambda job: (submitted.append(job.name), submit(job))[1]
    sample = make_sample_handler(studio)

    async def run(steps: object) -> list:
        return [u async for u in sample("local/tiny-ddpm", "ddim", steps, 0.0, 2, 1)]

    updates = asyncio.run(run(3))
    assert updates[-1][1].startswith("**Step 3/3**") and submitted == ["sample"]
    assert loaded_on and studio.runner.name not in loaded_on, loaded_on  # the runner's thread is "model-steps"
    with pytest.raises(gr.Error, match="Steps"):
        asyncio.run(run(0))
    assert submitted == ["sample"]  # the bad request never entered the runner


def test_lesson_eights_run_refuses_a_pixel_model_before_loading_it(tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir,
                                                                    monkeypatch) -> None:
    from diffusion.studio import SampleRequest

    studio = fresh_studio(tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir)
    seen = where_it_works(studio, monkeypatch)
    with pytest.raises(ValueError, match="needs a text model"):
        studio.lessons.guided_run("ddpm-mnist", SampleRequest("ddim", 5, 1, 0))
    assert seen["load"] == [] and seen["submit"] == []
    with pytest.raises(ValueError, match="guidance above 1"):
        studio.lessons.guided_run("ldm-shapes", SampleRequest("ddim", 5, 1, 0, prompt="a red circle"))
