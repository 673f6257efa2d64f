"""Results shared between identical requests: an LRU of finished runs, and runs in flight that others join.

A class pressing Sample with the default seed sends 30 identical requests. The first one runs; the
others that arrive while it runs follow it (they see its previews and get its images), and those that
arrive later get the stored result. Every request that determines its images fully (model, precision,
sampler, steps, seed, n, eta, prompts, guidance) is its own key, so a hit is bit-identical to a run.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CACHE_BYTES = 128 * 2**20


class ResultCache(Generic[T]):
    """Least-recently-used results, bounded in bytes (a result larger than the bound is not kept)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: T, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass
class Flight(Generic[T]):
    """One run in flight: its newest update, how many it has produced, and how it ended (followers skip to
    the newest, so the ones before it are not kept)."""

    latest: T | None = None
    count: int = 0
    done: bool = False
    error: BaseException | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class Flights(Generic[T]):
    """Runs in flight by key: the first request of a key leads (runs), later ones follow its updates."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[T]] = {}
        self._lock = threading.Lock()

    def join(self, key: Hashable) -> tuple[Flight[T], bool]:
        """The flight of ``key`` and whether the caller leads it (True: it must run and :meth:`land`)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def post(self, flight: Flight[T], update: T) -> None:
        with flight.changed:
            flight.latest, flight.count = update, flight.count + 1
            flight.changed.notify_all()

    def land(self, key: Hashable, flight: Flight[T], error: BaseException | None = None) -> None:
        """The leader's run ended (``error`` None: it finished; else it failed or was cancelled)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        with flight.changed:
            flight.done, flight.error = True, error
            flight.changed.notify_all()

    @staticmethod
    def follow(flight: Flight[T], wait_s: float, idle: T | None = None,
               quiet: Callable[[T], T] | None = None) -> Iterator[T]:
        """The flight's updates as they come, skipping to the newest each time (previews in between are
        not owed to a follower; the last update is). While nothing new has come within ``wait_s``,
        ``idle`` is yielded (when given), so a caller that shares its thread with the leader can go on: such a
        caller passes ``wait_s`` 0 and never blocks (a runner's model thread; its turn then ran no model step,
        which the runner counts as waiting, :class:`diffusion.runners.FairRunner`).
        Once an update has come, ``quiet(update)`` is yielded instead of ``idle`` (the newest update without what is
        not to be sent twice). Raises ``LookupError`` when the leader failed or was cancelled: the follower must run
        itself."""
        seen = 0
        while True:
            with flight.changed:
                if flight.count == seen and not flight.done and wait_s > 0:
                    flight.changed.wait(wait_s)
                count, done, error = flight.count, flight.done, flight.error
                latest = flight.latest if count > seen else None
            if latest is not None:
                seen = count
                if quiet is not None:
                    idle = quiet(latest)
                yield latest
            elif done:
                if error is not None:
                    raise LookupError("the run this request followed did not finish") from error
                return
            elif idle is not None:
                yield idle


def shared_run(key: Hashable, results: ResultCache[T], flights: Flights[T], run: Callable[[], Iterator[T]],
               idle: T, wait_s: float, done: Callable[[T], bool], stored: Callable[[T], T],
               nbytes: Callable[[T], int], quiet: Callable[[T], T] | None = None) -> Iterator[T]:
    """The updates of the run ``key`` names, shared with identical requests: the stored result (``stored(result)``
    marks it so), else the updates of an identical run in flight (``idle`` while it has nothing new; ``wait_s`` as
    :meth:`Flights.follow`, with ``quiet``), else ``run()`` itself, whose updates identical requests follow and whose last update
    (``done``) is kept (``nbytes`` of it). A follower whose leader stopped runs it itself."""
    kept = results.get(key)
    if kept is not None:
        yield stored(kept)
        return
    flight, leader = flights.join(key)
    if not leader:
        try:
            for update in Flights.follow(flight, wait_s, idle, quiet):
                yield update
                if done(update):  # the leader's result: nothing more to wait for
                    return
            return
        except LookupError:  # its leader was cancelled or failed: lead (or follow) a new run
            logger.info("the identical run this request followed stopped; running it again")
        yield from shared_run(key, results, flights, run, idle, wait_s, done, stored, nbytes, quiet)
        return
    try:
        for update in run():
            flights.post(flight, update)
            yield update
    except BaseException as error:  # failed, or closed by a consumer that stopped (a cancel)
        flights.land(key, flight, error)
        raise
    results.put(key, update, nbytes(update))
    flights.land(key, flight)
