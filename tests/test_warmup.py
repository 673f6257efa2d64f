"""Warm-up before class (demo.warmup): each Show me's final result kept by inputs, the warm-up running every
Show me with its defaults, and in the app a warmed Show me answering without model work, the same bytes."""

from __future__ import annotations

import asyncio

import pytest

from demo.warmup import LessonResults
from tests.helpers import load


def _collect(handler, *args) -> list:
    async def run() -> list:
        return [update async for update in handler(*args)]

    return asyncio.run(run())


def test_a_finished_run_is_kept_by_its_inputs_and_nothing_partial_or_failed() -> None:
    calls: list[tuple] = []

    async def show(seed: float):
        calls.append((seed,))
        yield ({"__type__": "update"}, "running")  # a partial update (gr.skip() for the picture)
        if seed == 13:
            raise RuntimeError("the model failed")
        yield ([("picture", "caption")], f"seed {seed}")

    results = LessonResults(max_items=2)
    run = results.remember(4, "lesson_race", show, [0])
    assert _collect(run, 0) == [({"__type__": "update"}, "running"), ([("picture", "caption")], "seed 0")]
    assert _collect(run, 0.0) == [([("picture", "caption")], "seed 0")]  # from memory: 0 and 0.0 are one seed
    assert len(calls) == 1 and results.hits == 1
    with pytest.raises(RuntimeError):
        _collect(run, 13)
    assert len(results) == 1  # a failed run is not kept
    _collect(run, 1)
    _collect(run, 2)
    assert len(results) == 2 and len(calls) == 4  # bounded: the least recently used (seed 0) went
    _collect(run, 0)
    assert len(calls) == 5


def test_a_run_that_ends_on_a_partial_update_is_not_kept() -> None:
    async def cancelled(seed: float):
        yield ({"__type__": "update"}, "running")

    results = LessonResults()
    run = results.remember(3, "lesson_sampling", cancelled, [0])
    _collect(run, 0)
    assert len(results) == 0


def test_the_warm_up_runs_every_show_me_with_its_defaults_and_survives_a_failure() -> None:
    seen: list[tuple] = []

    async def one_shot(prompt: str, seed: float):
        seen.append((prompt, seed))
        return ("picture", prompt)

    async def broken(seed: float):
        raise ValueError("no model")
        yield  # an async generator

    results = LessonResults()
    results.remember(7, "lesson_text", one_shot, ["a red circle", 0])
    results.remember(9, "lesson_limits", broken, [0])

    async def warm() -> list:
        return [line async for line in results.warm()]

    lines = asyncio.run(warm())
    assert [(done, total) for done, total, _ in lines] == [(1, 2), (2, 2)]
    assert "failed (ValueError)" in lines[1][2] and seen == [("a red circle", 0)]
    assert asyncio.run(results.shows[0].handler("a red circle", 0)) == ("picture", "a red circle")
    assert seen == [("a red circle", 0)]  # answered from memory


@pytest.mark.slow
def test_after_the_warm_up_every_show_me_answers_without_model_work(served) -> None:
    _, client, studio = served
    status = client.predict(api_name="/lessons_warm_up")
    assert status.startswith("Warm: every Show me") and "failed" not in status and status.count("- lesson") == 10
    before = studio.gate.steps_run
    first = client.predict(0, api_name="/lesson_race")
    again = client.predict(0, api_name="/lesson_race")
    assert studio.gate.steps_run == before  # no model step: both from memory
    assert load(first[0]).tobytes() == load(again[0]).tobytes() and first[1] == again[1]
    gallery, note = client.predict("a red circle left of a blue square", 0, api_name="/lesson_layout")
    assert studio.gate.steps_run == before and gallery and note
    client.predict(5, api_name="/lesson_race")  # another seed runs live
    assert studio.gate.steps_run > before
