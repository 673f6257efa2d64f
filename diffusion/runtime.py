"""Process-wide runtime settings, set once at start-up."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Model runs at once: on a 2-core CPU one UNet pass at a time is fastest (the UI's queue uses it too).
MODEL_RUNS = 1


CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The container's CPU quota in cores, or None where there is none (or it cannot be read).

    cgroup v2 ``cpu.max`` holds "QUOTA PERIOD" ("max PERIOD": no quota); cgroup v1 has
    ``cpu/cpu.cfs_quota_us`` (-1: no quota) and ``cpu/cpu.cfs_period_us``. A Space or a Docker
    ``--cpus 2`` limit shows here and not in the CPU affinity, which lists every core of the host.
    """
    try:
        fields = (cgroup / "cpu.max").read_text().split()
    except OSError:
        try:
            fields = [(cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip(),
                      (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()]
        except OSError:
            return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores(cgroup: Path = CGROUP) -> int:
    """Cores this process may use: its CPU affinity, capped by the container's CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    if quota is not None:
        cores = min(cores, max(1, int(quota)))  # more threads than the quota only get throttled
    return max(1, cores)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads once (0: :func:`available_cores`). Returns the count."""
    if threads <= 0:
        threads = available_cores()
    torch.set_num_threads(max(1, threads))
    logger.info("torch threads: %d", torch.get_num_threads())
    return torch.get_num_threads()


class ComputeGate:
    """At most ``limit`` denoising steps run at once in this process, whoever runs them.

    The UI's queue frees a cancelled job's slot at once, while the job's worker thread may still
    be inside a step; the gate makes that thread and the next job's take turns, so the number of
    UNet passes running together never exceeds ``limit`` (2 cores: 1). ``active`` is the number
    of steps running now and ``peak`` the most ever seen at once (tests and the load harness read it).
    """

    def __init__(self, limit: int = 1):
        if limit < 1:
            raise ValueError(f"the compute gate needs a limit of at least 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._count = threading.Lock()
        self.active = 0
        self.peak = 0
        self.steps_run = 0

    def _take_slot(self) -> None:
        self._slots.acquire()
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def _give_slot(self) -> None:
        with self._count:
            self.active -= 1
        self._slots.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """One slot of the gate while the block runs (counted in ``active`` and ``peak``)."""
        self._take_slot()
        try:
            yield
        finally:
            self._give_slot()

    def steps(self, records: Iterator[T]) -> Iterator[T]:
        """Advance ``records`` one item at a time inside the gate and yield each item outside it.

        A consumer that stops iterating (a cancelled or disconnected request) stops the work:
        nothing runs between two ``next()`` calls, and closing this generator closes ``records``.
        """
        try:
            while True:
                with self.hold():
                    try:
                        item = next(records, _DONE)
                    finally:
                        with self._count:
                            self.steps_run += 1
                if item is _DONE:
                    return
                yield item  # type: ignore[misc]
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()


_DONE = object()


_STEP = threading.local()  # what the job whose step is running on this thread says about it


def in_scheduled_step() -> bool:
    """Is this code running inside a step of a :class:`FairScheduler` job (on its thread)?"""
    return getattr(_STEP, "running", False)


def waiting_for_another_job() -> None:
    """Say, inside a job's step, that the step did no work: the job waits for another job's progress
    (a request following an identical one). The scheduler then runs the other jobs before asking it again."""
    _STEP.waiting = True


def begin_step() -> None:
    """On the thread about to run a job's step: nothing said about it yet."""
    _STEP.running, _STEP.waiting, _STEP.progress = True, False, None


def end_step() -> tuple[bool, tuple[int, int] | None]:
    """On the thread that ran a job's step: whether the step only waited, and the progress it reported."""
    _STEP.running = False
    return getattr(_STEP, "waiting", False), getattr(_STEP, "progress", None)


def report_progress(done: int, total: int) -> None:
    """Say, inside a job's step, how many of its steps are done: the scheduler estimates the work left."""
    _STEP.progress = (done, total)


WARMUP_S = 0.5  # compute every new request gets first, in turns (its first preview), before the rest


class StepJob:
    """One request's work as an iterator whose every ``next()`` is one step, for :class:`FairScheduler`.

    ``emit(item)`` receives each item on the model thread; ``finish(error)`` is called once, with the
    exception the work raised or None. ``cancel()`` may be called from any thread: no further step
    starts (the step in flight, if any, finishes) and the iterator is closed on the model thread.
    """

    def __init__(self, steps: Iterator[T], emit, finish, name: str = "job"):  # noqa: ANN001 - callbacks
        self.steps, self.emit, self.finish, self.name = steps, emit, finish, name
        self.cancelled = threading.Event()
        self.steps_run = 0
        self.service_s = 0.0  # time its steps have taken so far (the scheduler serves the least first)
        self.waiting = False  # its last step did no work: it waits for another job
        self.progress: tuple[int, int] | None = None  # (steps done, steps in all), when the job says

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


class FairScheduler:
    """Fair sharing at the step level: a warm-up for every new request, then the least work left first.

    First come, first served runs whole jobs one after another, so a student behind a DDPM-1000 batch
    of 64 sees nothing for minutes. Here every ``next()`` of a job is one step, and the scheduler
    first gives every new request :data:`WARMUP_S` of compute, in turns, least served first (so every
    user sees a first preview within a second or two, and a short request often ends inside it), and
    then advances the request with the least work left (estimated from its steps left and its mean
    step), so equal long requests end one after another instead of all at the end, and a short one is
    never stuck behind a long one. No work is added (the CPU bounds the total). Each step runs on this scheduler's
    one thread: torch's OpenMP keeps a team of worker threads per calling thread, so steps that hop
    between threads run up to 2x slower. Every job keeps its own seeded generator and scheduler, so its
    results are bit-identical to running alone.
    """

    def __init__(self, name: str = "model-steps"):
        self.name = name
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

    def _take(self) -> StepJob:
        """The job to advance: a cancelled one first (to end it), then the one with the least service among
        those not waiting for another job; waits while there is none."""
        with self._cv:
            while not self._ring:
                self._cv.wait()
            if all(job.waiting for job in self._ring):  # they all wait for work done elsewhere: do not spin
                self._cv.wait(0.005)
                for job in self._ring:
                    job.waiting = False
            return min(self._ring, key=StepJob.priority)

    def _leave(self, job: StepJob) -> None:
        with self._cv:
            self._ring.remove(job)

    def _run(self) -> None:  # the model thread
        while True:
            job = self._take()
            error: BaseException | None = None
            try:
                if job.cancelled.is_set():
                    raise StopIteration
                began = time.perf_counter()
                begin_step()
                try:
                    item = next(job.steps)
                finally:
                    waited, progress = end_step()
                    self._account(job, time.perf_counter() - began, waited)
                    job.progress = progress or job.progress
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
        """Charge a step: work counts as service; a step that only waited does not, and a step that worked
        may have brought news to every job that waits."""
        with self._cv:
            if waited:
                job.waiting = True
                return
            job.service_s += seconds
            for other in self._ring:
                other.waiting = False

    def _end(self, job: StepJob, error: BaseException | None) -> None:
        self._leave(job)
        end_job(job, error)


class FirstComeScheduler(FairScheduler):
    """First come, first served, still one step per turn on the one model thread: the oldest request runs to
    its end before the next starts (a cancelled one is ended at once; one that waits for an identical
    request's run lets the others go). The queue the app had before the fair scheduler, kept as the load
    harness's baseline (``app.py --scheduling first-come``)."""

    def _take(self) -> StepJob:
        with self._cv:
            while not self._ring:
                self._cv.wait()
            for job in self._ring:
                if job.cancelled.is_set():
                    return job
            if all(job.waiting for job in self._ring):  # as the fair scheduler: do not spin
                self._cv.wait(0.005)
                for job in self._ring:
                    job.waiting = False
            return next(job for job in self._ring if not job.waiting)


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


class ThreadPerJob:
    """Runs each :class:`StepJob` on a thread of its own, for work done elsewhere (Ray Serve replicas): a step
    then waits on the network, which must not hold up the other users' steps, and the fair sharing of the
    compute happens where the compute is (each replica's own :class:`FairScheduler`). Same interface as
    :class:`FairScheduler`: ``submit`` and ``active``; a cancelled job starts no further step."""

    def __init__(self, name: str = "remote-steps"):
        self.name = name
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

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


#: How the app's requests share the model thread: "fair" (the default: every new request first gets a preview,
#: then the least work left runs first) or "first-come" (whole requests in arrival order: the load harness's
#: baseline).
SCHEDULING = ("fair", "first-come")


def make_step_scheduler(scheduling: str, name: str = "model-steps") -> FairScheduler:
    """A new step scheduler of the kind ``scheduling`` names (:data:`SCHEDULING`; ``ValueError`` otherwise)."""
    kinds = {"fair": FairScheduler, "first-come": FirstComeScheduler}
    if scheduling not in kinds:
        raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}, got {scheduling!r}")
    return kinds[scheduling](name)
