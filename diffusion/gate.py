"""The compute gate: at most ``limit`` denoising steps at once in this process, whoever runs them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: Model runs at once: on a 2-core CPU one UNet pass at a time is fastest (the UI's queue uses it too).
MODEL_RUNS = 1


@dataclass(frozen=True)
class Tally:
    """What the steps run on one watched thread have said, as values: how many steps passed the gate there,
    and the progress the last one's record carried ((steps done, steps in all); None if its stream gives none)."""

    steps: int = 0
    progress: tuple[int, int] | None = None


class ComputeGate:
    """At most ``limit`` denoising steps run at once in this process, whoever runs them.

    The UI's queue frees a cancelled job's slot at once, while the job's worker thread may still
    be inside a step; the gate makes that thread and the next job's take turns, so the number of
    UNet passes running together never exceeds ``limit`` (2 cores: 1). ``active`` is the number
    of steps running now and ``peak`` the most ever seen at once (tests and the load harness read it).

    A runner that shares a thread among requests (:class:`diffusion.runners.FairRunner`) :meth:`watch`-es
    that thread and reads its :class:`Tally` around each turn: whether the turn did model work (a step that
    passed the gate) and the progress its records carried. Nothing else is tallied.
    """

    def __init__(self, limit: int = MODEL_RUNS):
        if limit < 1:
            raise ValueError(f"the compute gate needs a limit of at least 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._count = threading.Lock()
        self.active = 0
        self.peak = 0
        self.steps_run = 0
        self._tallies: dict[int, Tally] = {}  # by thread ident, only for watched threads

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

    def watch(self, thread_id: int) -> None:
        """Tally the steps that pass the gate on the thread ``thread_id`` (:func:`threading.get_ident`)."""
        with self._count:
            self._tallies.setdefault(thread_id, Tally())

    def tally(self, thread_id: int) -> Tally:
        """The watched thread's tally so far (an empty one for a thread not watched)."""
        with self._count:
            return self._tallies.get(thread_id, Tally())

    def steps(self, records: Iterator[T], progress: Callable[[T], tuple[int, int]] | None = None) -> Iterator[T]:
        """Advance ``records`` one item at a time inside the gate and yield each item outside it.

        ``progress`` reads (steps done, steps in all) off a record: on a watched thread it is tallied, so the
        runner that shares the thread can estimate the work left. A consumer that stops iterating (a
        cancelled or disconnected request) stops the work: nothing runs between two ``next()`` calls, and
        closing this generator closes ``records``.
        """
        me = threading.get_ident()
        try:
            while True:
                with self.hold():
                    try:
                        item = next(records, _DONE)
                    finally:
                        with self._count:
                            self.steps_run += 1
                            tally = self._tallies.get(me)
                            if tally is not None:
                                self._tallies[me] = Tally(tally.steps + 1, tally.progress)
                if item is _DONE:
                    return
                if progress is not None:
                    with self._count:
                        tally = self._tallies.get(me)
                        if tally is not None:
                            self._tallies[me] = Tally(tally.steps, progress(item))  # type: ignore[arg-type]
                yield item  # type: ignore[misc]
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()


_DONE = object()
