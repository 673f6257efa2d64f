"""Samples that share an x_t, Ho et al. 2020, Fig. 7: the reverse process run once, then continued several times
from the same x_t with fresh noise.

From an x_t late in the reverse process (small t) the continuations agree on almost everything; from an early one
(large t) only on the coarse layout, and from x_T on nothing in particular: how much of the image x_t has already
decided, seen directly. DDPM only: its fresh noise at every step is what makes the continuations differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The figure it reproduces (arXiv v2), linked beside it.
FIGURE_URL = "https://arxiv.org/pdf/2006.11239#figure.7"
#: Where the continuations start, as fractions of the run's steps (t = 750, 500 and 250 of 1000, as in the figure).
STARTS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class SharedLatent:
    """Continuations of one run: ``x_t`` uint8 (k, H, W[, 3]), the shared x_t at each of the k starts (clipped to
    [-1, 1] for display); ``samples`` uint8 (k, m, H, W[, 3]), the m samples of p(x_0 | x_t) from each; ``original``
    the run's own x_0; ``timesteps`` the t of each start."""

    x_t: np.ndarray
    samples: np.ndarray
    original: np.ndarray
    timesteps: tuple[float, ...]


def start_indices(num_steps: int, starts: tuple[float, ...] = STARTS) -> list[int]:
    """The 0-based steps the continuations start at, one per fraction of ``num_steps`` (distinct, in order)."""
    return sorted({min(num_steps - 1, max(0, int(round(f * num_steps)))) for f in starts})
