"""How many cores this process may use, and torch's threads, set once at start-up."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

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
