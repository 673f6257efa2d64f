"""Runners: how the app's requests share the model. (A *scheduler*, in this project, is a noise scheduler.)

A request's work is a :class:`StepJob`: an iterator whose every ``next()`` is one step. A runner takes jobs
(``submit``), says how many it holds (``active``) and owns the :class:`~diffusion.gate.ComputeGate` every model
step passes (``gate``). The Studio is given one runner when it is built and the UI runs every model event on it:

* :class:`FairRunner` (the default): every job's steps on one model thread, a warm-up for every new request,
  then the least work left first.
* :class:`ThreadRunner`: each job on its own thread, for model work done elsewhere (Ray Serve replicas, where
  each replica shares its compute with its own :class:`FairRunner`).

A job's items are read on another thread through a :class:`Relay` (the runner puts them in a queue as they come):
the app's request handlers and the Ray replicas read them so, and the runner only ever advances the Studio's own
streams (model work; several of one request run :func:`in_turn`, as one job).

What a runner learns about a job's turn comes as values through the gate (:class:`~diffusion.gate.Tally`):
whether the turn ran a model step, and the progress that step's record carried.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from diffusion.gate import ComputeGate

logger = logging.getLogger(__name__)

WARMUP_S = 0.5  # compute every new request gets first, in turns (its first preview), before the rest


class StepJob:
    """One request's work as an iterator whose every ``next()`` is one step.

    ``emit(item)`` receives each item on the runner's thread; ``finish(error)`` is called once, with the
    exception the work raised or None. ``cancel()`` may be called from any thread: no further step
    starts (the step in flight, if any, finishes) and the iterator is closed on the runner's thread.
    """

    def __init__(self, steps: Iterator[Any], emit: Callable[[Any], None],
                 finish: Callable[[BaseException | None], None], name: str = "job"):
        self.steps, self.emit, self.finish, self.name = steps, emit, finish, name
        self.cancelled = threading.Event()
        self.steps_run = 0
        self.service_s = 0.0  # time its model steps have taken so far (the fair runner serves the least first)
        self.waiting = False  # its last turn ran no model step: it waits for another job (or did no model work)
        self.progress: tuple[int, int] | None = None  # (steps done, steps in all), from its records

    def remaining_s(self) -> float:
        """The work left, estimated from the steps left and the mean step so far (its service if unknown)."""
        if self.progress is None or self.progress[0] <= 0:
            return self.service_s
        done, total = self.progress
        return self.service_s / done * max(0, total - done)

    def priority(self) -> tuple:
        """Smaller runs first: a cancelled job (to end it); not one that waits; a job still in its warm-up,
        least served first; then the least work left."""
        warm = self.service_s < WARMUP_S
        return (not self.cancelled.is_set(), self.waiting, not warm,
                self.service_s if warm else self.remaining_s())

    def cancel(self) -> None:
        self.cancelled.set()


class Runner(Protocol):
    """What the Studio and the UI need of a runner (:class:`FairRunner`, :class:`ThreadRunner`)."""

    gate: ComputeGate

    def submit(self, job: StepJob) -> StepJob: ...

    @property
    def active(self) -> int: ...

    def on_thread(self) -> bool: ...


class FairRunner:
    """Fair sharing at the step level: a warm-up for every new request, then the least work left first.

    First come, first served runs whole jobs one after another, so a student behind a DDPM-1000 batch
    of 64 sees nothing for minutes. Here every ``next()`` of a job is one step, and the runner
    first gives every new request :data:`WARMUP_S` of compute, in turns, least served first (so every
    user sees a first preview within a second or two, and a short request often ends inside it), and
    then advances the request with the least work left (estimated from its steps left and its mean
    step), so equal long requests end one after another instead of all at the end, and a short one is
    never stuck behind a long one. No work is added (the CPU bounds the total). Each step runs on this
    runner's one thread: torch's OpenMP keeps a team of worker threads per calling thread, so steps that
    hop between threads run up to 2x slower. Every job keeps its own seeded generator and noise scheduler,
    so its results are bit-identical to running alone.

    A turn that ran no model step through the gate (a request following an identical one, whose leader has
    nothing new yet) counts as waiting: it is not charged, and the other jobs run before it is asked again.
    """

    def __init__(self, name: str = "model-steps", gate: ComputeGate | None = None):
        self.name = name
        self.gate = gate if gate is not None else ComputeGate()
        self._ring: list[StepJob] = []  # the active jobs, in the order they came
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.peak_jobs = 0  # the most jobs in the ring at once (for tests and benchmarks)

    def submit(self, job: StepJob) -> StepJob:
        with self._cv:
            self._ring.append(job)
            self.peak_jobs = max(self.peak_jobs, len(self._ring))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return job

    @property
    def active(self) -> int:
        with self._cv:
            return len(self._ring)

    def on_thread(self) -> bool:
        """Is the caller this runner's model thread (where a step must never block on another job)?"""
        return self._thread is not None and threading.current_thread() is self._thread

    def _waiting_or_sleep(self) -> None:
        """Under the lock: when every job waits for work done elsewhere, pause briefly instead of spinning."""
        if all(job.waiting for job in self._ring):
            self._cv.wait(0.005)
            for job in self._ring:
                job.waiting = False

    def _take(self) -> StepJob:
        """The job to advance: a cancelled one first (to end it), then the one with the least service among
        those not waiting for another job; waits while there is none."""
        with self._cv:
            while not self._ring:
                self._cv.wait()
            self._waiting_or_sleep()
            return min(self._ring, key=StepJob.priority)

    def _run(self) -> None:  # the model thread
        me = threading.get_ident()
        self.gate.watch(me)
        while True:
            job = self._take()
            error: BaseException | None = None
            try:
                if job.cancelled.is_set():
                    raise StopIteration
                before = self.gate.tally(me)
                began = time.perf_counter()
                try:
                    item = next(job.steps)
                finally:
                    after = self.gate.tally(me)
                    self._account(job, time.perf_counter() - began, after.steps == before.steps)
                    if after.progress is not None and after.progress is not before.progress:
                        job.progress = after.progress
                job.steps_run += 1
            except StopIteration:
                self._end(job, None)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the job's owner, who raises it again
                error = exc
            if error is not None:
                self._end(job, error)
                continue
            try:
                job.emit(item)
            except Exception:  # noqa: BLE001 - a consumer's failure must not stop the other jobs
                logger.exception("a step job's consumer failed; the job is dropped")
                job.cancel()

    def _account(self, job: StepJob, seconds: float, waited: bool) -> None:
        """Charge a turn: model work counts as service; a turn that ran no model step does not, and a turn
        that worked may have brought news to every job that waits."""
        with self._cv:
            if waited:
                job.waiting = True
                return
            job.service_s += seconds
            for other in self._ring:
                other.waiting = False

    def _end(self, job: StepJob, error: BaseException | None) -> None:
        with self._cv:
            self._ring.remove(job)
        end_job(job, error)


def end_job(job: StepJob, error: BaseException | None) -> None:
    """Close a finished or cancelled job's iterator (its ``finally`` blocks run on this thread), then tell
    its owner, once, with the error it raised or None."""
    try:
        close = getattr(job.steps, "close", None)
        if close is not None:
            close()
    except Exception:  # noqa: BLE001 - closing a generator that fails is logged, not fatal
        logger.exception("closing step job %s failed", job.name)
    try:
        job.finish(error)
    except Exception:  # noqa: BLE001
        logger.exception("finishing step job %s failed", job.name)


class ThreadRunner:
    """Runs each :class:`StepJob` on a thread of its own, for work done elsewhere (Ray Serve replicas): a step
    then waits on the network, which must not hold up the other users' steps, and the fair sharing of the
    compute happens where the compute is (each replica's own :class:`FairRunner`). A cancelled job starts
    no further step. Its gate serves the model work that stays in this process."""

    def __init__(self, name: str = "remote-steps", gate: ComputeGate | None = None):
        self.name = name
        self.gate = gate if gate is not None else ComputeGate()
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def on_thread(self) -> bool:
        """Never: each job has a thread of its own, which may block."""
        return False

    def submit(self, job: StepJob) -> StepJob:
        with self._lock:
            self._active += 1
        threading.Thread(target=self._run, args=(job,), name=f"{self.name}-{job.name}", daemon=True).start()
        return job

    def _run(self, job: StepJob) -> None:
        error: BaseException | None = None
        try:
            while not job.cancelled.is_set():
                try:
                    item = next(job.steps)
                except StopIteration:
                    break
                job.steps_run += 1
                try:
                    job.emit(item)
                except Exception:  # noqa: BLE001 - a consumer's failure ends this job only
                    logger.exception("a step job's consumer failed; the job is dropped")
                    job.cancel()
        except Exception as exc:  # noqa: BLE001 - handed to the job's owner, who raises it again
            error = exc
        finally:
            with self._lock:
                self._active -= 1
            end_job(job, error)


def in_turn(*streams: Iterator[Any]) -> Iterator[tuple[int, Any]]:
    """Several streams as one job's steps: each to its end, one after the other, every item as
    (the index of its stream, the item). A stream is started only when the ones before it have ended."""
    for index, stream in enumerate(streams):
        for item in stream:
            yield index, item


class Cancelled(Exception):
    """A :class:`Relay`'s job was cancelled before its stream ended: its reader stops (no result follows)."""


def drain(box: queue.Queue[tuple[str, Any]], timeout_s: float | None = None,
          idle: Callable[[], Any] | None = None) -> Iterator[Any]:
    """What a producer thread puts in ``box`` as ("item", value), until ("end", error): error None ends the
    iteration, else it is raised. While nothing comes for ``timeout_s`` (None: wait), ``idle()`` is yielded
    (or raises)."""
    while True:
        try:
            kind, value = box.get(timeout=timeout_s)
        except queue.Empty:
            assert idle is not None, "a timeout needs an idle item"
            yield idle()
            continue
        if kind == "end":
            if value is not None:
                raise value
            return
        yield value


class Relay:
    """``steps`` submitted to ``runner`` as one job (a step per turn, on the runner's thread), its items read on
    another thread with :meth:`items`. :meth:`cancel` may be called from any thread: no further step starts, and
    the reader gets :class:`Cancelled` (after the items that came before)."""

    def __init__(self, runner: Runner, steps: Iterator[Any], name: str = "job"):
        self._box: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.job = StepJob(steps, lambda item: self._box.put(("item", item)), self._end, name)
        runner.submit(self.job)  # after self.job is set: a job may end before submit returns

    def _end(self, error: BaseException | None) -> None:
        self._box.put(("end", Cancelled() if error is None and self.job.cancelled.is_set() else error))

    def cancel(self) -> None:
        self.job.cancel()

    def items(self, timeout_s: float | None = None, idle: Callable[[], Any] | None = None) -> Iterator[Any]:
        """The job's items as they come (``idle()`` while none comes for ``timeout_s``), then its end: the error
        the work raised, :class:`Cancelled`, or the end of the iteration. Leaving the iteration cancels the job."""
        try:
            yield from drain(self._box, timeout_s, idle)
        finally:
            self.job.cancel()
