"""Cancelled work stops: within a step, without overlap, leaving the server idle."""

from __future__ import annotations


import threading
import time
from pathlib import Path

import gradio as gr
import pytest

from diffusion.gate import ComputeGate
from tests.helpers import process_cpu_s, settled_steps
from tests.load import app_server

def test_compute_gate_runs_one_step_at_a_time_and_closes_what_it_wraps() -> None:
    gate = ComputeGate(1)
    closed = threading.Event()

    def slow(n: int):
        try:
            for i in range(n):
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    results: list[list[int]] = [[], []]

    def consume(k: int) -> None:
        for i in gate.steps(slow(20)):
            results[k].append(i)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [list(range(20))] * 2
    assert gate.peak == 1 and gate.active == 0 and gate.steps_run == 42  # 20 + 20 steps and two ends
    closed.clear()
    steps = gate.steps(slow(100))
    assert next(steps) == 0
    steps.close()  # a cancelled consumer: the wrapped generator is closed at once
    assert closed.is_set()


def test_streamed_stops_between_steps_on_cancel_and_thins_ticks() -> None:
    import asyncio

    from demo.common import STREAM_EVERY_S, Shown, Tick, streamed
    from diffusion.runners import FairRunner

    runner = FairRunner("test-streamed-cancel")
    done: list[int] = []

    def run(n: int, pause: float):
        for i in range(n):
            time.sleep(pause)  # one "denoising step"
            done.append(i)
            yield i if i == 0 or i == n - 1 else Tick(i)

    def steps(n: int, pause: float):  # a handler returns its work and view
        return Shown((run(n, pause),), lambda items: items)

    async def cancel_midway() -> tuple[int, int, int]:
        updates = streamed(runner)(steps)(200, 0.05)
        assert await updates.__anext__() == 0
        waiting = asyncio.ensure_future(updates.__anext__())
        await asyncio.sleep(0.6)  # a Tick or two arrive while a step runs
        if waiting.done():
            waiting = asyncio.ensure_future(updates.__anext__())
        at_cancel = len(done)
        waiting.cancel()  # what the queue does to a cancelled request
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.3)
        settled = len(done)
        await asyncio.sleep(0.5)
        return at_cancel, settled, len(done)

    at_cancel, settled, later = asyncio.run(cancel_midway())
    assert settled <= at_cancel + 1 and later == settled  # the step in flight, then nothing

    async def collect() -> list:
        return [u async for u in streamed(runner)(steps)(50, 0.0)]

    done.clear()
    sent = asyncio.run(collect())
    assert len(done) == 50 and sent[0] == 0 and sent[-1] == 49
    assert len(sent) <= 2 + 1 + int(0.05 * 50 / STREAM_EVERY_S)  # the ends and few Ticks, not 48

    def failing_run():
        yield 1
        raise gr.Error("a clear message")

    def broken():
        return Shown((failing_run(),), lambda items: items)

    async def failing() -> list:
        return [u async for u in streamed(runner)(broken)()]

    with pytest.raises(gr.Error, match="a clear message"):
        asyncio.run(failing())


def test_drawn_updates_are_drawn_off_the_model_thread() -> None:
    """A handler's checks run in the request's own handler, its model work on the runner's model thread, and its
    view and figures (``Drawn``) on the request's own thread, for streamed and one-step events alike; a handler that
    is a generator function (whose checks would run on the model thread), or that returns anything but a ``Shown``,
    is refused."""
    import asyncio

    from demo.common import Drawn, Shown, one_step, shown, streamed
    from diffusion.later import later
    from diffusion.runners import FairRunner

    runner = FairRunner("test-drawn")
    where: dict[str, str] = {}

    def note(name: str) -> str:
        where[name] = threading.current_thread().name
        return name

    def stream():
        note("streamed checks")

        def steps():
            note("step")
            yield Drawn(lambda: note("streamed figure"))

        def view(items):
            note("view")
            yield from items

        return Shown((steps(),), view)

    def once():
        note("one-step checks")
        return shown(later(lambda: note("one step")), lambda value: note("one-step figure"))

    async def both() -> tuple:
        return [u async for u in streamed(runner)(stream)()], await one_step(runner, once)()

    assert asyncio.run(both()) == (["streamed figure"], "one-step figure")
    assert where["step"] == where["one step"] == "test-drawn"
    assert all(where[name] != "test-drawn" for name in ("streamed checks", "one-step checks", "view",
                                                        "streamed figure", "one-step figure")), where

    def generator_handler():
        yield "checks here would run on the model thread"

    with pytest.raises(TypeError, match="generator function"):
        streamed(runner)(generator_handler)
    with pytest.raises(TypeError, match="generator function"):
        one_step(runner, generator_handler)

    async def plain() -> list:  # the old shape: a generator that would run the view on the model thread
        return [u async for u in streamed(runner)(lambda: iter([1, 2]))()]

    with pytest.raises(TypeError, match="not a Shown"):
        asyncio.run(plain())


@pytest.fixture(scope="module")
def embedded(serve):
    """The app on the shipped models (assets/): real UNet costs, for the cancellation test."""
    return serve(queue_size=64, embedded=True)


@pytest.mark.slow
def test_cancelled_jobs_stop_within_a_step_and_never_overlap(embedded) -> None:
    _, client, studio = embedded
    before = studio.gate.steps_run
    jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, seed, api_name="/sample") for seed in range(3)]
    deadline = time.monotonic() + 60
    while studio.gate.steps_run < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # the first job is running
    assert studio.gate.steps_run >= before + 3
    time.sleep(2)
    at_cancel = studio.gate.steps_run
    for job in jobs:
        job.cancel()
    # the step in flight may finish (one per cancelled job at most); then nothing more may run
    settled = settled_steps(studio)
    time.sleep(3)
    print(f"\ncancel (in process): {at_cancel - before} steps (batch 64) before the cancels, {settled - at_cancel} "
          f"after; {studio.gate.steps_run - settled} in the next 3 s; peak concurrent steps {studio.gate.peak}")
    assert settled - at_cancel <= len(jobs)  # at most the step in flight of each job
    assert studio.gate.steps_run == settled
    assert studio.gate.peak <= 1
    # the app keeps serving: a short request completes
    grid, status = client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 7, api_name="/sample")
    assert "Step 2/2" in status


@pytest.mark.slow
def test_forty_cancelled_jobs_leave_the_server_idle(tmp_path: Path) -> None:
    """The cancellation probe against ``python app.py``: 40 x /sample (DDPM-1000, batch 64) from one client,
    cancelled after 4 s; the server process's CPU time over the next 5 s is under 10% of one core."""
    from gradio_client import Client

    with app_server(tmp_path, "--queue-size", "64") as (pid, url):
        client = Client(url, verbose=False)
        client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 0, api_name="/sample")  # the model is loaded
        idle0 = process_cpu_s(pid)
        time.sleep(5)
        idle = process_cpu_s(pid) - idle0
        jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, seed, api_name="/sample") for seed in range(40)]
        time.sleep(4)
        busy0 = process_cpu_s(pid)
        start = time.monotonic()
        for job in jobs:
            job.cancel()
        cancel_s = time.monotonic() - start
        time.sleep(1.0)  # the step in flight (about 0.5 s at batch 64) ends
        cpu0 = process_cpu_s(pid)
        time.sleep(5)
        cpu = process_cpu_s(pid) - cpu0
        print(f"\ncancel (app.py): idle server {idle / 5:.1%} of one core; 40 jobs cancelled in {cancel_s:.1f} s "
              f"({cpu0 - busy0:.1f} s CPU meanwhile, the step in flight included); then {cpu:.2f} s of CPU in 5 s "
              f"({cpu / 5:.1%} of one core)")
        assert cpu < 0.5  # under 10% of one core
        grid, status = client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 7, api_name="/sample")
        assert "Step 2/2" in status
        client.close()
        log = next(tmp_path.glob("app-*.log")).read_text()
        assert "Traceback" not in log and "KeyError" not in log  # a KeyError in /cancel was seen once


@pytest.mark.slow
def test_a_request_admitted_beside_a_cancelled_one_never_runs_a_step_beside_it(embedded) -> None:
    _, client, studio = embedded
    studio.gate.peak = 0
    jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, 100 + i, api_name="/sample") for i in range(4)]
    time.sleep(3)
    for job in jobs[:-1]:
        job.cancel()
    time.sleep(3)
    jobs[-1].cancel()
    deadline = time.monotonic() + 30
    while studio.gate.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert studio.gate.peak == 1
