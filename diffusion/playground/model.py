"""The playground's denoiser: a small MLP eps_theta(x_t, t) over 2-D points.

A diffusers ``ModelMixin`` / ``ConfigMixin``, so it saves and loads like the UNets
(``save_pretrained`` writes ``config.json`` and ``diffusion_pytorch_model.safetensors``). The timestep
enters through the sinusoidal embedding of the Transformer and of DDPM (Ho et al. 2020, Appendix B),
added to every hidden layer, as the UNets add it to every residual block.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn


class PointDenoiser(ModelMixin, ConfigMixin):
    """eps_theta: (x_t (B, 2) or (B, D), t (B,) or a scalar) -> predicted noise (B, D).

    ``hidden``: width of the hidden layers; ``layers``: hidden layers (each Linear + SiLU with the time
    embedding added); ``time_embedding_dim``: size of the sinusoidal embedding of t.
    """

    @register_to_config
    def __init__(self, in_dim: int = 2, hidden: int = 128, layers: int = 3, time_embedding_dim: int = 64):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.Linear(time_embedding_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.input = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.output = nn.Linear(hidden, in_dim)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-draw every weight with ``generator`` (PyTorch's default Linear init, from a seeded generator)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=5**0.5, generator=generator)
                bound = 1 / module.in_features**0.5
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])  # one t for the whole batch (the sampling loop's call)
        emb = self.time_mlp(get_timestep_embedding(t, self.config.time_embedding_dim, flip_sin_to_cos=True,
                                                   downscale_freq_shift=0))
        h = nn.functional.silu(self.input(sample) + emb)
        for block in self.blocks:
            h = h + nn.functional.silu(block(h) + emb)  # residual: deep stacks train as fast as shallow ones
        return self.output(h)
