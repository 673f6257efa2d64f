"""A memory budget for what users keep between requests (the step lab's recorded runs).

Each user keeps their own run (in the UI's per-session state); the budget only keeps a weak
reference to it with its size and age. API clients send no heartbeat, so nothing tells the server
that they left: without a bound, every scripted session's run would stay until the UI's
10,000-session cap. When the runs held by all users together pass ``max_bytes``, the oldest are
released first; a run older than ``ttl_s`` is released too. A released run drops its arrays and
its owner is told to run again.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

DEFAULT_STATE_BYTES = 1024**3  # 1 GiB for all users' step-lab runs together
DEFAULT_STATE_TTL_S = 60 * 60.0  # a run is kept for an hour (a lesson)


class Releasable(Protocol):
    def release(self, reason: str) -> None:
        """Drop the held arrays; later reads tell the user why (``reason``)."""


@dataclass
class _Entry:
    ref: weakref.ReferenceType
    nbytes: int
    created: float


class StateBudget:
    """The byte budget and time-to-live for runs held across all sessions (oldest released first)."""

    def __init__(self, max_bytes: int = DEFAULT_STATE_BYTES, ttl_s: float = DEFAULT_STATE_TTL_S,
                 clock: Callable[[], float] = time.monotonic):
        if max_bytes <= 0 or ttl_s <= 0:
            raise ValueError(f"the state budget needs positive bytes and seconds, got {max_bytes}, {ttl_s}")
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # oldest first
        self.released = 0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def describe(self) -> str:
        return (f"runs are kept for {self.ttl_s / 60:.0f} minutes and {self.max_bytes / 2**20:.0f} MB "
                "for all users together, the oldest released first")

    def admit(self, item: Releasable, nbytes: int) -> None:
        """Hold ``item`` (``nbytes`` large); release expired runs and then the oldest until the total
        fits. The run just admitted always stays, even alone over the budget."""
        key = id(item)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(weakref.ref(item, lambda _ref, k=key: self._forget(k)), int(nbytes),
                                        self._clock())
            victims = self._sweep_locked(keep=key)
        self._release(victims)

    def sweep(self) -> int:
        """Release the runs past their time-to-live (and any over the budget). Returns how many."""
        with self._lock:
            victims = self._sweep_locked(keep=None)
        self._release(victims)
        return len(victims)

    def discard(self, item: Releasable) -> None:
        """The owner's session ended (the UI deleted its state): release the run now."""
        with self._lock:
            entry = self._entries.pop(id(item), None)
        if entry is not None:
            self._release([(item, "the session ended")])

    def _sweep_locked(self, keep: int | None) -> list[tuple[Releasable, str]]:
        now = self._clock()
        victims: list[tuple[Releasable, str]] = []
        for key, entry in list(self._entries.items()):
            if key != keep and now - entry.created > self.ttl_s:
                victims.append((self._entries.pop(key), "it expired"))
        total = sum(e.nbytes for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            entry = self._entries.pop(key)
            total -= entry.nbytes
            victims.append((entry, "memory was needed for newer runs"))
        return [(item, why) for entry, why in victims if (item := entry.ref()) is not None]

    def _release(self, victims: list[tuple[Releasable, str]]) -> None:
        for item, why in victims:
            item.release(why)
            self.released += 1
            logger.info("released a held run (%s)", why)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)
