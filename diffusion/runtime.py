"""Process-wide runtime settings, set once at start-up."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
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

    def steps(self, records: Iterator[T]) -> Iterator[T]:
        """Advance ``records`` one item at a time inside the gate and yield each item outside it.

        A consumer that stops iterating (a cancelled or disconnected request) stops the work:
        nothing runs between two ``next()`` calls, and closing this generator closes ``records``.
        """
        try:
            while True:
                with self._slots:
                    with self._count:
                        self.active += 1
                        self.peak = max(self.peak, self.active)
                    try:
                        item = next(records, _DONE)
                    finally:
                        with self._count:
                            self.active -= 1
                            self.steps_run += 1
                if item is _DONE:
                    return
                yield item  # type: ignore[misc]
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()


_DONE = object()
