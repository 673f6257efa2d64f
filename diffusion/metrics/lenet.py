"""A LeNet-5-like MNIST classifier: the judge of the ``ddpm-mnist`` quality gate.

Its 84-d penultimate activations are the feature space of the Frechet LeNet Distance
(FLD), the MNIST analogue of FID's Inception features. Trained by
``diffusion/training/train_lenet.py`` on the 4,000 training digits only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from diffusion.registry import ASSETS

ASSET = ASSETS / "lenet-mnist"


class LeNet(ModelMixin, ConfigMixin):
    """Input (N, 1, 32, 32) float in [0, 1]; ``forward`` gives logits (N, 10)."""

    @register_to_config
    def __init__(self, num_classes: int = 10, feature_dim: int = 84, dropout: float = 0.25):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(128 * 16, 256), nn.ReLU(),
            nn.Linear(256, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32) in [0, 1] -> (N, 84) penultimate activations."""
        return self.fc(self.conv(images * 2 - 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class LeNetFeatures(nn.Module):
    """torchmetrics feature extractor: float (N, 1, 32, 32) in [0, 1] -> (N, 84)."""

    def __init__(self, lenet: LeNet):
        super().__init__()
        self.lenet = lenet.eval()
        self.num_features = lenet.config.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 3:  # torchmetrics probes with an RGB dummy image
            images = images.float().mean(dim=1, keepdim=True)
        if images.dtype == torch.uint8:
            images = images.float() / 255
        with torch.no_grad():
            return self.lenet.features(images.float()).double()


def load_lenet(path: Path | str = ASSET) -> LeNet:
    """The shipped judge, in eval mode (safetensors, strict loading)."""
    return LeNet.from_pretrained(str(path), use_safetensors=True).eval()
