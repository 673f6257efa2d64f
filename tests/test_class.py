"""A class at once: the fair runner shares the one model thread among every model request, step by step."""

from __future__ import annotations

import pytest

import asyncio
import threading
import time

import numpy as np

from diffusion.request import SampleRequest
from diffusion.runners import FairRunner, StepJob


def logged_steps(name: str, n: int, log: list[str], pause: float):
    """``n`` steps of ``pause`` seconds that append ``name`` to ``log`` as they run."""
    for i in range(n):
        time.sleep(pause)
        log.append(name)
        yield i


def run_jobs(runner: FairRunner, named: dict[str, object], timeout: float = 120.0,
             gated: bool = True) -> tuple[dict, list[str]]:
    """Submit each iterator as a job, in order; return what each emitted and the order they finished in. ``gated``:
    each item is a model step, passed through the runner's gate (as the Studio's steps are; the Studio's own
    streams pass its gate already)."""
    items: dict[str, list] = {name: [] for name in named}
    finished: list[str] = []
    errors: dict[str, BaseException] = {}
    done = threading.Event()
    lock = threading.Lock()

    def finisher(name: str):
        def finish(error: BaseException | None) -> None:
            with lock:
                finished.append(name)
                if error is not None:
                    errors[name] = error
                if len(finished) == len(named):
                    done.set()
        return finish

    for name, steps in named.items():
        steps = runner.gate.steps(iter(steps)) if gated else iter(steps)
        runner.submit(StepJob(steps, items[name].append, finisher(name), name))
    assert done.wait(timeout), f"jobs did not finish: {finished}"
    assert not errors, errors
    return items, finished


def test_a_short_job_behind_a_long_one_finishes_first() -> None:
    def work(n: int, pause: float):
        for i in range(n):
            time.sleep(pause)
            yield i

    runner = FairRunner("test-fair")
    items, finished = run_jobs(runner, {"long": work(200, 0.005), "short": work(5, 0.005)})
    assert finished == ["short", "long"]
    assert items == {"long": list(range(200)), "short": list(range(5))}
    assert runner.peak_jobs == 2 and runner.active == 0


def test_first_come_runs_whole_requests_in_arrival_order() -> None:
    """The load harness's baseline: a short request behind a long one waits for it (the fair runner's opposite)."""
    from tests.first_come import FirstComeRunner

    def work(n: int):
        for i in range(n):
            time.sleep(0.005)
            yield i

    _, finished = run_jobs(FirstComeRunner("test-fcfs"), {"long": work(50), "short": work(2)})
    assert finished == ["long", "short"]


def test_the_studio_owns_its_runner_and_the_baseline_is_no_product_flag(tiny_ddpm_dir) -> None:
    """The Studio is given its runner once (default: the fair one) and shares its gate; first-come is the load
    harness's baseline (tests/first_come.py), not an option of the app."""
    from demo.launch import parse_args
    from diffusion.registry import Registry
    from diffusion.runners import ThreadRunner
    from diffusion.studio import Studio
    from tests.first_come import FirstComeRunner

    registry = Registry.default([tiny_ddpm_dir])
    studio = Studio(registry, device="cpu", cache_bytes=0)
    assert type(studio.runner) is FairRunner and studio.gate is studio.runner.gate
    baseline = FirstComeRunner("baseline")
    studio = Studio(registry, device="cpu", cache_bytes=0, runner=baseline)
    assert studio.runner is baseline and studio.gate is baseline.gate
    remote = ThreadRunner()
    assert Studio(registry, device="cpu", cache_bytes=0, runner=remote).gate is remote.gate
    for removed in (["--scheduling", "first-come"], ["--scheduling", "batching"]):
        with pytest.raises(SystemExit):
            parse_args(removed)


def test_a_cancelled_job_leaves_the_ring_and_never_starts_if_it_had_not() -> None:
    ran: list[str] = []
    closed: list[str] = []

    def work(name: str, n: int):
        try:
            for i in range(n):
                ran.append(name)
                time.sleep(0.002)
                yield i
        finally:
            closed.append(name)

    runner = FairRunner("test-cancel")
    gate = threading.Event()

    def blocker():
        gate.wait(10)
        yield 0

    ended = threading.Event()
    runner.submit(StepJob(runner.gate.steps(blocker()), lambda item: None, lambda error: None, "blocker"))
    never = runner.submit(StepJob(runner.gate.steps(work("never", 10)), lambda item: None,
                                     lambda error: ended.set(), "never"))
    never.cancel()  # cancelled while it waits for its first turn
    gate.set()
    assert ended.wait(10)
    assert "never" not in ran and never.steps_run == 0
    seen: list[int] = []
    stop_at = threading.Event()
    job = StepJob(runner.gate.steps(work("stopped", 1000)), lambda item: (seen.append(item), item == 3 and stop_at.set()),
                  lambda error: ended.set(), "stopped")
    ended.clear()
    runner.submit(job)
    assert stop_at.wait(10)
    job.cancel()
    assert ended.wait(10)
    assert job.steps_run <= 5 and "stopped" in closed  # at most the step in flight, then the generator closed


def test_interleaved_requests_give_the_same_images_as_alone(studio) -> None:
    """Three requests of two models, their steps interleaved by the runner: bit-identical to each alone."""
    requests = {
        "ddpm-a": ("local/tiny-ddpm", SampleRequest("ddpm", 12, n=3, seed=1)),
        "ddim-b": ("local/tiny-ddpm", SampleRequest("dpmpp-2m", 6, n=2, seed=2)),
        "text-c": ("local/tiny-sd", SampleRequest("ddim", 5, n=2, seed=3, prompt="a red circle", guidance_scale=3.0)),
    }
    alone = {name: studio.sample(model_id, request) for name, (model_id, request) in requests.items()}
    runner = studio.runner
    items, finished = run_jobs(runner, {name: studio.generate(model_id, request, previews=2)
                                           for name, (model_id, request) in requests.items()}, gated=False)
    assert runner.peak_jobs == 3
    for name in requests:
        final = items[name][-1]
        assert final.done
        np.testing.assert_array_equal(final.images, alone[name])
    assert finished[0] != "ddpm-a"  # the first submitted, the most steps: a shorter run ended before it


def test_streamed_events_share_the_model_thread_fairly() -> None:
    """Two streamed events started together through demo.common.streamed: equal steps alternate (the one
    with less service goes next), so the short one ends long before the long one."""
    from demo.common import Shown, streamed

    runner = FairRunner("test-streamed")

    order: list[str] = []

    async def both() -> None:
        async def drain(name: str, n: int) -> list:
            return [u async for u in streamed(runner)(gated)(name, n, order, 0.003)]

        def gated(*args):  # each step a model step, through the runner's gate (as the Studio's steps are)
            return Shown((runner.gate.steps(logged_steps(*args)),), lambda items: items)

        first, second = await asyncio.gather(drain("long", 40), drain("short", 5))
        assert second[-1] == 4 and first[-1] == 39

    asyncio.run(both())
    assert order[:12].count("short") == 5, order  # alternating, not 40 long steps first
    assert runner.active == 0


def sharing_studio(tiny_ddpm_dir):
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    return Studio(Registry.default([tiny_ddpm_dir]), device="cpu", precision="fp32", cache_bytes=2**20)


def test_identical_requests_share_one_run_and_the_cache_returns_identical_bytes(tiny_ddpm_dir) -> None:
    studio = sharing_studio(tiny_ddpm_dir)
    request = SampleRequest("ddpm", 20, n=2, seed=7)
    runner = studio.runner
    before = studio.gate.steps_run
    # three students press Sample together: one run, two followers
    items, _ = run_jobs(runner, {f"student{k}": studio.generate("local/tiny-ddpm", request, previews=4)
                                    for k in range(3)}, gated=False)
    ran = studio.gate.steps_run - before
    assert 20 <= ran <= 21, ran  # one run's steps (and its end), not three
    finals = [items[f"student{k}"][-1] for k in range(3)]
    assert all(f.done for f in finals)
    for final in finals[1:]:
        np.testing.assert_array_equal(final.images, finals[0].images)
    # a later identical request: the stored result, no model call; a different seed runs
    before = studio.gate.steps_run
    *_, again = studio.generate("local/tiny-ddpm", request, previews=4)
    assert again.cached and studio.gate.steps_run == before
    assert again.grid.tobytes() == finals[0].grid.tobytes()
    alone = sharing_studio(tiny_ddpm_dir).sample("local/tiny-ddpm", request)  # a fresh process's answer
    np.testing.assert_array_equal(again.images, alone)
    *_, other = studio.generate("local/tiny-ddpm", SampleRequest("ddpm", 20, n=2, seed=8), previews=4)
    assert not other.cached and studio.gate.steps_run > before


def test_a_follower_whose_leader_is_cancelled_runs_itself(tiny_ddpm_dir) -> None:
    studio = sharing_studio(tiny_ddpm_dir)
    request = SampleRequest("ddim", 30, n=1, seed=3)
    leader = studio.generate("local/tiny-ddpm", request, previews=0)
    next(leader)  # the leader has run one step
    follower = studio.generate("local/tiny-ddpm", request, previews=0)
    assert next(follower).step >= 0  # following
    leader.close()  # the leader's user pressed Stop
    *_, final = follower
    assert final.done and final.num_steps == 30 and not final.cached
    np.testing.assert_array_equal(final.images, sharing_studio(tiny_ddpm_dir).sample("local/tiny-ddpm", request))


@pytest.mark.slow
def test_through_the_app_a_short_request_overtakes_a_long_one(serve, tmp_path) -> None:
    """A batch of 64 at 100 steps of a 64x64 RGB model, then one image at 2 steps: the second ends first."""
    from tests.tiny import save_tiny_ddpm

    save_tiny_ddpm(tmp_path / "rgb64", channels=3, sample_size=64, attention=False)
    _, client, studio = serve(queue_size=8, extra_dirs=[tmp_path / "rgb64"])
    long = client.submit("local/rgb64", "ddpm", 100, 0.0, 64, 1, api_name="/sample")
    deadline = time.monotonic() + 120
    while not long.outputs() and time.monotonic() < deadline:  # the long run has started
        time.sleep(0.01)
    short = client.submit("local/rgb64", "ddim", 2, 0.0, 1, 2, api_name="/sample")
    short.result(timeout=120)
    assert not long.done(), "the short request waited for the long one"
    long.cancel()  # its end proves nothing more (the app's other tests run whole requests): not waited for
    from tests.helpers import settled_steps

    settled_steps(studio)


def test_a_new_request_gets_the_model_thread_at_once_under_load() -> None:
    """Least service first: a request that arrives while five long ones run gets its steps straight away."""
    runner = FairRunner("test-las")
    ran: list[str] = []
    done = threading.Event()
    for k in range(5):
        runner.submit(StepJob(runner.gate.steps(logged_steps(f"long{k}", 200, ran, 0.002)), lambda item: None,
                                 lambda error: None, f"long{k}"))
    time.sleep(0.2)  # the long ones have all had service
    runner.submit(StepJob(runner.gate.steps(logged_steps("new", 10, ran, 0.002)), lambda item: None,
                             lambda error: done.set(), "new"))
    assert done.wait(30)
    start = ran.index("new")
    assert ran[start:start + 10] == ["new"] * 10, ran[start - 3:start + 12]  # its ten steps in a row


def test_followers_wait_without_holding_the_model_thread(tiny_ddpm_dir) -> None:
    """Twenty identical requests on the runner: one leader runs, nineteen follow without blocking it;
    the total time stays near one run's."""
    studio = sharing_studio(tiny_ddpm_dir)
    request = SampleRequest("ddim", 40, n=4, seed=11)
    began = time.perf_counter()
    studio.sample("local/tiny-ddpm", SampleRequest("ddim", 40, n=4, seed=12))
    one = time.perf_counter() - began
    runner = studio.runner
    began = time.perf_counter()
    items, _ = run_jobs(runner, {f"s{k}": studio.generate("local/tiny-ddpm", request, previews=4)
                                    for k in range(20)}, gated=False)
    twenty = time.perf_counter() - began
    print(f"\none run {one:.2f} s; twenty identical requests together {twenty:.2f} s")
    assert all(items[f"s{k}"][-1].done for k in range(20))
    assert twenty < 5 * one + 1.0  # not twenty runs (measured: about 1-2x one run)


@pytest.mark.slow
def test_after_the_warm_up_the_least_work_left_goes_first() -> None:
    """Three equal long jobs: each gets its warm-up, then one runs to its end before the next (not all at
    the end together); the jobs' steps carry their progress, read through the gate as the Studio's are."""
    from diffusion.runners import WARMUP_S

    def sleeps(n: int, pause: float):
        for i in range(n):
            time.sleep(pause)
            yield i

    def work(n: int, pause: float):
        return runner.gate.steps(sleeps(n, pause), progress=lambda i: (i + 1, n))

    steps = int(3 * WARMUP_S / 0.01)  # about 1.5 s of work each, 0.5 s of it the warm-up
    runner = FairRunner("test-srpt")
    began = time.perf_counter()
    ends: list[float] = []
    done = threading.Event()

    def finish(error: BaseException | None) -> None:
        ends.append(time.perf_counter() - began)
        if len(ends) == 3:
            done.set()

    for k in range(3):
        runner.submit(StepJob(work(steps, 0.01), lambda item: None, finish, f"job{k}"))
    assert done.wait(60)
    print(f"\nthree jobs of {steps} steps end at " + ", ".join(f"{t:.1f} s" for t in ends))
    # in turns to the end they would all end at about 4.5 s; one after another the first ends near 2.5 s
    assert ends[0] < 0.75 * ends[-1], ends


def test_thread_per_job_runs_jobs_side_by_side_and_stops_cancelled_ones() -> None:
    """The runner for model work done elsewhere (diffusion.ray_backend): a job that waits does not hold up
    another, a cancelled job starts no further step and is closed, errors reach the owner."""
    import threading
    import time

    from diffusion.runners import StepJob, ThreadRunner

    runner = ThreadRunner()
    release, closed, results = threading.Event(), threading.Event(), {}

    def slow():
        try:
            yield "slow 1"
            release.wait(10)
            yield "slow 2"
        finally:
            closed.set()

    def quick():
        yield from ("quick 1", "quick 2")

    def failing():
        yield "ok"
        raise ValueError("bad")

    done = {name: threading.Event() for name in ("slow", "quick", "failing")}
    seen: dict[str, list] = {name: [] for name in done}
    jobs = {name: runner.submit(StepJob(gen(), seen[name].append,
                                        lambda error, n=name: (results.__setitem__(n, error), done[n].set()), name))
            for name, gen in (("slow", slow), ("quick", quick), ("failing", failing))}
    assert done["quick"].wait(5) and seen["quick"] == ["quick 1", "quick 2"]  # not behind the waiting job
    assert done["failing"].wait(5) and isinstance(results["failing"], ValueError)
    time.sleep(0.1)
    jobs["slow"].cancel()
    release.set()
    assert done["slow"].wait(5) and closed.is_set()
    assert seen["slow"] in (["slow 1"], ["slow 1", "slow 2"])  # the step in flight may finish, no further one
    assert results["quick"] is None and runner.active == 0


def test_a_follower_called_off_the_model_thread_never_blocks_it(tiny_ddpm_dir) -> None:
    """The UI calls ``generate`` in the request's handler and runs the stream on the runner: whether to block is
    decided on the thread that runs the steps, so a follower's turn on the model thread never waits 50 ms."""
    studio = sharing_studio(tiny_ddpm_dir)
    request = SampleRequest("ddim", 30, n=1, seed=5)
    leader = studio.generate("local/tiny-ddpm", request, previews=0)
    next(leader)  # the leader has started, and is then held
    follower = studio.generate("local/tiny-ddpm", request, previews=0)  # called here, off the model thread
    turns: list[float] = []
    done = threading.Event()
    studio.runner.submit(StepJob(follower, lambda update: turns.append(time.perf_counter()),
                                 lambda error: done.set(), "follower"))
    time.sleep(0.5)
    waiting_turns = len(turns)
    leader.close()  # the leader's user pressed Stop: the follower runs itself
    assert done.wait(60)
    print(f"\nfollower turns while its leader was held, in 0.5 s: {waiting_turns}")
    assert waiting_turns >= 25, waiting_turns  # a turn each ~5 ms (the runner's pause), not one each 50 ms
