"""The trajectory planner's network and its plans through the one loop (Janner et al. 2022, "Planning with
Diffusion", Diffuser).

A plan is a whole trajectory tau = (s_0, ..., s_{H-1}) of 2-D positions, a (2, H) signal denoised at once
by diffusers' temporal ``UNet1DModel`` (1-D residual blocks over the horizon, as Diffuser's temporal U-Net
and diffusers' value-guided RL pipeline use). The layout is told to the network as constant one-hot input
channels (one model for all layouts), and each waypoint's position also as Fourier features
(:func:`network_input`). The model predicts the clean trajectory tau_0 (as Diffuser's maze
planner; the noise-predicting form of DDPM Eq. 14 is a training option) on positions normalised to [-1, 1]
(:meth:`diffusion.data.mazes.Maze.normalise`).

Conditioning is inpainting (Janner et al. 2022, Sec. 3.3): the start and goal are known states, written
into x_T and into every step's x_{t-1}, so the network only ever fills in the waypoints between them.
Training sets them the same way in x_t and leaves them out of the loss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet1DModel

from diffusion.data.mazes import HORIZON, LAYOUT_NAMES, maze
from diffusion.loop import StepRecord, denoise
from diffusion.schedulers import make_scheduler

logger = logging.getLogger(__name__)

PLANNER_FILE = "planner.json"  # the folder's own record: layouts (channel order), horizon, position features
FORMAT = "planner@1"
# Fourier features of each waypoint's position (Tancik et al. 2020), at these periods in cells: a network fed raw
# coordinates learns smooth functions of them first (spectral bias) and never learned where single-cell pillars
# stand (measured: 7% of plans clear in the room of pillars after 4,000 steps, against 80% in the U-maze)
FOURIER_PERIODS = (1.0, 2.0, 4.0, 8.0)


def feature_channels(n_layouts: int, periods: tuple[float, ...] = FOURIER_PERIODS) -> int:
    """The network's input channels: 2 positions, one per layout, and sin/cos of x and y per period."""
    return 2 + n_layouts + 4 * len(periods)


def build_unet(n_layouts: int = len(LAYOUT_NAMES), horizon: int = HORIZON,
               block_out_channels: tuple[int, ...] = (32, 64, 128),
               periods: tuple[float, ...] = FOURIER_PERIODS) -> UNet1DModel:
    """Diffuser's temporal U-Net as diffusers builds it for value-guided planning: residual 1-D blocks
    (kernel 5, GroupNorm 8, Mish), a sinusoidal time embedding through an MLP, the horizon halved at each
    level but the last. Input: :func:`feature_channels`; output: 2 (the clean plan, or the noise)."""
    n = len(block_out_channels)
    return UNet1DModel(
        sample_size=horizon,
        in_channels=feature_channels(n_layouts, periods),
        out_channels=2,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownResnetBlock1D",) * n,
        up_block_types=("UpResnetBlock1D",) * (n - 1),
        mid_block_type="MidResTemporalBlock1D",
        out_block_type="OutConv1DBlock",
        time_embedding_type="positional",
        use_timestep_embedding=True,
        flip_sin_to_cos=False,
        freq_shift=1,
        act_fn="mish",
        norm_num_groups=8,
        layers_per_block=1,
        downsample_each_block=False,
    )


def build_scheduler(num_train_timesteps: int = 100, prediction_type: str = "sample") -> DDPMScheduler:
    """The cosine schedule (Nichol & Dhariwal 2021), as Diffuser; x_0 estimates clipped to [-1, 1], the
    maze's extent. The network predicts the clean trajectory tau_0 ("sample") rather than the noise, as the maze
    configuration released with Diffuser does."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=True, clip_sample_range=1.0)


def layout_channels(layouts: torch.Tensor, n_layouts: int, horizon: int) -> torch.Tensor:
    """One-hot layout channels (B, n_layouts, horizon) for layout indices (B,)."""
    one_hot = torch.nn.functional.one_hot(layouts.long(), n_layouts).float()
    return one_hot[:, :, None].expand(-1, -1, horizon)


def network_input(x: torch.Tensor, layouts: torch.Tensor, n_layouts: int, grid: tuple[int, int],
                  periods: tuple[float, ...]) -> torch.Tensor:
    """What the network reads for plans x (B, 2, H) normalised to [-1, 1] in mazes of ``grid`` (rows, cols) cells:
    x itself, the one-hot layout (B, n_layouts, H), and sin and cos of 2 pi p / P for each coordinate p in cells
    and each period P in ``periods`` (B, 4 len(periods), H)."""
    rows, cols = grid
    cells = (x + 1) / 2 * torch.tensor([cols, rows], dtype=x.dtype, device=x.device)[None, :, None]
    features = [x, layout_channels(layouts, n_layouts, x.shape[-1]).to(x.dtype)]
    for period in periods:
        angle = 2 * torch.pi * cells / period
        features += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(features, 1)


def fix_ends(x: torch.Tensor, start: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Inpainting (Janner et al. 2022, Sec. 3.3): x (B, 2, H) with s_0 := start and s_{H-1} := goal (B, 2)."""
    x = x.clone()
    x[:, :, 0] = start.to(x.dtype)
    x[:, :, -1] = goal.to(x.dtype)
    return x


@dataclass
class Planner:
    """A loaded planner: the network, its training scheduler's config, the layouts it knows and its horizon."""

    unet: UNet1DModel
    scheduler_config: dict
    layouts: tuple[str, ...]
    horizon: int
    periods: tuple[float, ...] = FOURIER_PERIODS

    @classmethod
    def from_folder(cls, folder: Path | str, dtype: torch.dtype = torch.float32) -> Planner:
        """A planner folder: ``unet/`` and ``scheduler/`` in diffusers format (safetensors only) and
        :data:`PLANNER_FILE`."""
        folder = Path(folder)
        record = json.loads((folder / PLANNER_FILE).read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"{folder} is not a planner folder ({PLANNER_FILE} format {record.get('format')!r})")
        unet = UNet1DModel.from_pretrained(folder / "unet", use_safetensors=True, torch_dtype=dtype).eval()
        scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(folder / "scheduler"))  # JSON only
        periods = tuple(float(p) for p in record.get("fourier_periods", ()))
        layouts = tuple(record["layouts"])
        if unet.config.in_channels != feature_channels(len(layouts), periods):
            raise ValueError(f"{folder}: the UNet reads {unet.config.in_channels} channels, the record says "
                             f"{feature_channels(len(layouts), periods)}")
        return cls(unet, dict(scheduler.config), layouts, int(record["horizon"]), periods)

    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        DDPMScheduler.from_config(self.scheduler_config).save_pretrained(folder / "scheduler")
        (folder / PLANNER_FILE).write_text(json.dumps(
            {"format": FORMAT, "layouts": list(self.layouts), "horizon": self.horizon,
             "fourier_periods": list(self.periods)}, indent=2) + "\n")
        return folder

    def layout_id(self, name: str) -> int:
        if name not in self.layouts:
            raise ValueError(f"this planner knows {', '.join(self.layouts)}; got {name!r}")
        return self.layouts.index(name)

    def eps_theta(self, x: torch.Tensor, t: torch.Tensor, layouts: torch.Tensor) -> torch.Tensor:
        """The network's output for plans x_t (B, 2, H) in the layouts (B,): tau_0 or the noise, as the
        scheduler's ``prediction_type`` says."""
        grid = maze(self.layouts[int(layouts[0])]).shape
        features = network_input(x, layouts, len(self.layouts), grid, self.periods)
        dtype = next(self.unet.parameters()).dtype
        t = t.reshape(-1).expand(x.shape[0]) if torch.is_tensor(t) else torch.full((x.shape[0],), int(t))
        out = self.unet(features.to(dtype), t).sample
        return out.to(x.dtype)

    def steps(self, layout: str, start: np.ndarray, goal: np.ndarray, n: int, sampler: str, steps: int,
              generator: torch.Generator, eta: float | None = None) -> Iterator[StepRecord]:
        """``n`` plans from ``start`` to ``goal`` (cell units, (2,) for all or (n, 2) one per plan) through the
        one loop, with a fresh scheduler of ``sampler``: the records hold x_t (n, 2, H) in normalised units,
        ends fixed at every step. The noise x_T ~ N(0, I) is drawn from ``generator``."""
        index = torch.full((n,), self.layout_id(layout))
        s, g = known_ends(layout, start, goal, n)
        noise = torch.randn(n, 2, self.horizon, generator=generator)  # x_T ~ N(0, I)
        scheduler = make_scheduler(sampler, self.scheduler_config)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.eps_theta(x, t, index)

        return denoise(eps, scheduler, noise, steps, generator, eta=eta,
                       constrain=lambda x: fix_ends(x, s, g))


def known_ends(layout: str, start: np.ndarray, goal: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The start and goal (cell units, (2,) or (n, 2)) as the normalised (n, 2) tensors inpainting writes."""
    m = maze(layout)
    return tuple(torch.as_tensor(np.broadcast_to(m.normalise(p), (n, 2)).copy(), dtype=torch.float32)
                 for p in (start, goal))  # type: ignore[return-value]


def to_cells(layout: str, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Plans (B, 2, H) in normalised units -> (B, H, 2) in cell units."""
    x = x.float().numpy() if torch.is_tensor(x) else np.asarray(x)
    return maze(layout).denormalise(np.swapaxes(x, -1, -2))

