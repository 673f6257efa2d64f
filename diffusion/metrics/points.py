"""Distance between two 2-D point clouds: the sliced Wasserstein distance (POT, Flamary et al. 2021).

SW_2(P, Q) = ( E_theta W_2^2(theta . P, theta . Q) )^(1/2) over directions theta on the circle
(Bonneel et al. 2015): each projection is a 1-D optimal transport problem (sorting). The projections
are drawn from a seeded CPU ``torch.Generator`` and handed to POT, so the same clouds give the same number.
Any finite sample of a distribution is at some distance from a second sample of the same one: the
*floor*, data against data at the same sizes, says how close "as good as the data" is.
"""

from __future__ import annotations

import numpy as np
import ot
import torch

PROJECTIONS = 256


def directions(count: int = PROJECTIONS, seed: int = 0, dim: int = 2) -> np.ndarray:
    """``count`` unit vectors (dim, count) drawn uniformly (normalised Gaussians), from ``seed``."""
    v = torch.randn(dim, count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm(dim=0, keepdim=True)).numpy()


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int = PROJECTIONS, seed: int = 0) -> float:
    """SW_2 between point clouds ``a`` (N, D) and ``b`` (M, D), uniform weights (POT)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"two non-empty point clouds of the same dimension are needed, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(ot.sliced_wasserstein_distance(a, b, projections=directions(projections, seed, a.shape[1])))
