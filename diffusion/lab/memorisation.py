"""Memorisation: how close is each sample to its nearest training image, against how close new real images
are (Carlini et al. 2023, "Extracting Training Data from Diffusion Models", measure near copies by such
distances).

A model that copies its training set puts samples much nearer to training images than unseen real images
ever are; a model that generalises keeps its samples about as far from the training set as held-out data.
Distances are L2 over pixels in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def nearest(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each uint8 query image (n, ...), the L2 distance (pixels in [0, 1]) to its nearest key image
    (m, ...) and that key's index: (distances (n,), indices (n,))."""
    q = torch.from_numpy(np.asarray(queries).reshape(len(queries), -1).astype(np.float32) / 255)
    k = torch.from_numpy(np.asarray(keys).reshape(len(keys), -1).astype(np.float32) / 255)
    best = torch.cdist(q, k).min(dim=1)
    return best.values.numpy(), best.indices.numpy()


def nearest_distances(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """L2 distance (pixels in [0, 1]) from each query image to its nearest key image."""
    return nearest(queries, keys)[0]


@dataclass
class NearestCopies:
    """Samples (n, H, W) uint8 beside their nearest training images (n, H, W) at ``distances`` (n,), and the
    held-out images' own distances to the training set (m,): the yardstick."""

    samples: np.ndarray
    nearest: np.ndarray
    distances: np.ndarray
    held_out_distances: np.ndarray

    @property
    def threshold(self) -> float:
        """The closest any held-out image comes to the training set: a sample nearer than this is a near copy."""
        return float(self.held_out_distances.min())

    @property
    def near_copies(self) -> int:
        return int((self.distances < self.threshold).sum())


def nearest_copies(samples: np.ndarray, train: np.ndarray, held_out: np.ndarray) -> NearestCopies:
    """Each sample's nearest training image, and the held-out yardstick (all uint8 images of one size)."""
    distances, indices = nearest(samples, train)
    return NearestCopies(np.asarray(samples), np.asarray(train)[indices], distances, nearest_distances(held_out, train))
