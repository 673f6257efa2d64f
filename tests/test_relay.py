"""The runner advances the Studio's streams; a request's view reads their items on its own thread (runners.Relay)."""

from __future__ import annotations

import threading
import time

import pytest

from diffusion.gate import ComputeGate
from diffusion.runners import Cancelled, FairRunner, Relay, in_turn


class AtOnce:
    """A runner that runs a job to its end inside ``submit`` (a job may end before ``submit`` returns)."""

    gate = ComputeGate()
    active = 0

    def on_thread(self) -> bool:
        return False

    def submit(self, job):  # noqa: ANN001, ANN201
        for item in job.steps:
            job.emit(item)
        job.finish(None)
        return job


def test_a_relay_whose_job_ends_before_submit_returns_still_ends() -> None:
    relay = Relay(AtOnce(), iter([1, 2]), "quick")
    assert list(relay.items(timeout_s=5, idle=lambda: pytest.fail("the end never came"))) == [1, 2]


def test_a_cancelled_relay_stops_its_job_and_its_reader() -> None:
    runner = FairRunner("test-relay")
    ran: list[int] = []

    def slow():
        for i in range(1000):
            time.sleep(0.01)
            ran.append(i)
            yield i

    relay = Relay(runner, slow(), "slow")
    items = relay.items()
    assert next(items) == 0
    relay.cancel()  # from another thread in the app: the request's handler
    with pytest.raises(Cancelled):
        for _ in items:
            pass
    settled = len(ran)
    time.sleep(0.1)
    assert len(ran) == settled < 1000 and runner.active == 0


def test_an_error_in_the_work_reaches_the_reader() -> None:
    def broken():
        yield 1
        raise ValueError("a clear message")

    relay = Relay(FairRunner("test-relay-error"), broken(), "broken")
    items = relay.items()
    assert next(items) == 1
    with pytest.raises(ValueError, match="a clear message"):
        next(items)


def test_streams_in_turn_are_read_back_as_parts_and_a_part_left_unread_is_skipped() -> None:
    from demo.common import parts

    started: list[str] = []

    def stream(name: str, n: int):
        started.append(name)
        yield from (f"{name}{i}" for i in range(n))

    first, second, third = parts(in_turn(stream("a", 3), stream("b", 2), stream("c", 2)), 3)
    assert next(first) == "a0" and started == ["a"]  # a stream starts only when the ones before it have ended
    assert list(second) == ["b0", "b1"]  # the rest of the first is skipped over
    assert list(first) == [] and list(third) == ["c0", "c1"]


def test_a_view_reads_on_its_own_thread_while_the_runner_runs_the_work() -> None:
    """The work's steps run on the runner's thread and nowhere else; its reader gets them in order."""
    runner = FairRunner("test-relay-thread")
    where: set[str] = set()

    def work():
        for i in range(5):
            where.add(threading.current_thread().name)
            yield i

    assert list(Relay(runner, work(), "work").items()) == list(range(5))
    assert where == {"test-relay-thread"}
