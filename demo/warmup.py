"""Warm-up before class: every lesson's Show me run once with its default inputs, its final result kept.

In class each Show me with those inputs then answers from memory, the same bytes as the run it keeps, without
waiting for the model behind 30 students' requests. A Show me with other inputs (another seed, another prompt)
runs live, and its result is kept too. The store is the app's, shared by every session, bounded in entries;
only a run that finished is kept (never a cancelled or failed one, never a partial update).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

MAX_KEPT = 64  # results kept (each a few pictures and a figure: well under 1 MB)


@dataclass(frozen=True)
class ShowMe:
    """One lesson's Show me: its event's name, its handler (an async generator function or coroutine function, as
    ``demo.common.streamed`` / ``one_step`` make them) and its inputs' default values."""

    number: int
    name: str
    handler: Callable[..., Any]
    defaults: tuple[Any, ...]


def _key(name: str, args: Sequence[Any]) -> Hashable:
    """The inputs as a key: whole numbers as int (the UI sends 0, 0.0 or "0" for a seed)."""
    def plain(value: Any) -> Hashable:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, (int, float)) and float(value).is_integer():
            return int(value)
        if isinstance(value, (int, float, str)):
            return value
        return repr(value)

    return (name, *map(plain, args))


def _complete(value: Any) -> bool:
    """Whether a handler's update sets every output (no ``gr.skip()``, which is an update dict)."""
    values = value if isinstance(value, (tuple, list)) and not _is_pictures(value) else (value,)
    return not any(isinstance(v, dict) and v.get("__type__") == "update" for v in values)


def _is_pictures(value: Any) -> bool:
    """A gallery's value (a list of (picture, caption) pairs) rather than a tuple of outputs."""
    return isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value)


class LessonResults:
    """The final results of Show me runs, by lesson and inputs, least recently used dropped past ``max_items``."""

    def __init__(self, max_items: int = MAX_KEPT):
        self.max_items = max_items
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.shows: list[ShowMe] = []
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def remember(self, number: int, name: str, handler: Callable[..., Any], defaults: Sequence[Any]) -> Callable:
        """``handler`` answering from this store when it holds the result for the same inputs, else running and
        keeping its final result; registered for :meth:`warm` with ``defaults``."""
        if inspect.isasyncgenfunction(handler):
            @functools.wraps(handler)
            async def run(*args: Any) -> AsyncIterator[Any]:
                key = _key(name, args)
                kept = self.get(key)
                if kept is not None:
                    yield kept
                    return
                last = None
                async for update in handler(*args):
                    last = update
                    yield update
                if last is not None and _complete(last):
                    self.put(key, last)
        else:
            @functools.wraps(handler)
            async def run(*args: Any) -> Any:
                key = _key(name, args)
                kept = self.get(key)
                if kept is not None:
                    return kept
                result = await handler(*args)
                if result is not None and _complete(result):
                    self.put(key, result)
                return result

        self.shows.append(ShowMe(number, name, run, tuple(defaults)))
        return run

    async def warm(self) -> AsyncIterator[tuple[int, int, str]]:
        """Run every registered Show me with its defaults (kept ones answer at once); yields (done, total, what
        was warmed and how long it took) after each. A Show me that fails is logged and skipped."""
        total = len(self.shows)
        for done, show in enumerate(self.shows, start=1):
            began = time.perf_counter()
            try:
                if inspect.isasyncgenfunction(show.handler):
                    async for _ in show.handler(*show.defaults):
                        pass
                else:
                    await show.handler(*show.defaults)
                line = f"lesson {show.number} ({show.name}): {time.perf_counter() - began:.1f} s"
            except Exception as error:  # noqa: BLE001 - one lesson's failure must not stop the warm-up of the rest
                logger.warning("warm-up of %s failed: %s", show.name, error)
                line = f"lesson {show.number} ({show.name}): failed ({type(error).__name__})"
            yield done, total, line

    def warm_in_background(self) -> threading.Thread:
        """:meth:`warm` on a thread of its own (``--warm`` at start-up), logging each lesson as it is done."""
        async def log_all() -> None:
            async for done, total, line in self.warm():
                logger.info("warm-up %d/%d: %s", done, total, line)

        thread = threading.Thread(target=asyncio.run, args=(log_all(),), name="lesson-warm-up", daemon=True)
        thread.start()
        return thread
