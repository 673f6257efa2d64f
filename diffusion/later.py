"""Model work that was checked and loaded, to run later: a stream of one item.

The Studio's one-shot views (the forward process, a guidance decomposition, a lesson's measurement) check their
arguments and load their model when called, like its streams, and return their computation as a stream of one item
(:func:`later`). The app then runs that one item as one step on its runner's model thread, in turn with every other
request, while the checks and the loading (which may mean a download) ran in the request's own handler before the
job entered the runner. A script takes the value with ``next(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def later(work: Callable[[], T]) -> Iterator[T]:
    """``work()`` as a stream of one item: it runs at the first ``next()``, in the thread that asks."""
    yield work()
