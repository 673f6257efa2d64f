"""Progressive generation, Ho et al. 2020, Fig. 6: the predicted x0 of several samples as t falls.

Large-scale features (where the digit is, its rough shape) appear first and details last: the figure the paper
uses to argue that the reverse process is a kind of progressive decoding (Sec. 4.3). Reproduced live from one run
of the one loop: the records' predicted x0 at evenly spaced steps, as pictures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from diffusion.loop import StepRecord

#: The figure it reproduces (arXiv v2), linked beside it.
FIGURE_URL = "https://arxiv.org/pdf/2006.11239#figure.6"


@dataclass(frozen=True)
class Progressive:
    """The predicted x0 of each image at the shown steps: uint8 (n, k, H, W) or (n, k, H, W, 3); ``steps`` the
    1-based steps shown (the last is the sample itself) and ``timesteps`` their t."""

    pred_x0: np.ndarray
    steps: tuple[int, ...]
    timesteps: tuple[float, ...]


def shown_steps(num_steps: int, points: int) -> list[int]:
    """``points`` 0-based step indices evenly spaced from the first to the last (fewer when the run is shorter)."""
    return sorted({int(i) for i in np.linspace(0, num_steps - 1, max(2, points)).round()})


def progressive(records: Iterable[StepRecord], picture: Callable[[torch.Tensor], np.ndarray],
                points: int = 8) -> Iterator[tuple[int, int, Progressive | None]]:
    """Follow a run's ``records`` and yield (steps done, steps, None) after each, then the figure's pictures with
    the last: the predicted x0 (``picture``: model space -> uint8 pictures, (B, H, W[, 3])) at :func:`shown_steps`;
    the last column is the sample, x_0 itself."""
    columns: list[np.ndarray] = []
    kept: list[tuple[int, float]] = []
    wanted: set[int] | None = None
    for record in records:
        if wanted is None:
            wanted = set(shown_steps(record.num_steps, points))
        if record.index in wanted:
            columns.append(picture(record.prev_sample if record.is_last else record.pred_original_sample))
            kept.append((record.index + 1, record.timestep))
        if not record.is_last:
            yield record.index + 1, record.num_steps, None
            continue
        pictures = np.stack(columns, axis=1)  # (n, k, H, W[, 3])
        yield record.num_steps, record.num_steps, Progressive(pictures, tuple(s for s, _ in kept),
                                                              tuple(t for _, t in kept))
