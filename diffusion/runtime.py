"""Process-wide runtime settings, set once at start-up."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads once (0: all cores this process may use). Returns the count."""
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    logger.info("torch threads: %d", torch.get_num_threads())
    return torch.get_num_threads()
