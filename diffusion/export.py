"""Export of the step-by-step views: GIF and MP4 animations of a trajectory (imageio)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np

PANELS = ("x_t", "noise", "pred_x0", "triptych")
MAX_FRAMES = 200


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def _upscale(image: np.ndarray, min_side: int) -> np.ndarray:
    factor = max(1, int(np.ceil(min_side / max(image.shape[:2]))))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)  # nearest neighbour: keeps pixels crisp


def trajectory_frames(steps: Sequence, panel: str = "triptych", min_side: int = 192,
                      max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """uint8 RGB frames (H, W, 3) of one view of a recorded trajectory (``StepView`` list).

    Long trajectories are subsampled evenly to ``max_frames`` (first and last step kept).
    """
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {', '.join(PANELS)}, got {panel!r}")
    if not steps:
        raise ValueError("the trajectory is empty: run the reverse process first")
    picks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), max_frames)).round().astype(int))
    frames = []
    for i in picks:
        view = steps[i]
        parts = [view.x_t, view.noise, view.pred_x0] if panel == "triptych" else [getattr(view, panel)]
        parts = [_upscale(_rgb(p), min_side) for p in parts]
        h = max(p.shape[0] for p in parts)
        gap = np.full((h, 8, 3), 255, np.uint8)
        row = [parts[0]]
        for p in parts[1:]:
            row += [gap, p]
        frames.append(np.concatenate(row, axis=1))
    return frames


def write_animation(frames: Sequence[np.ndarray], path: Path | str, fps: float = 10.0) -> Path:
    """Write frames as ``.gif`` (looping) or ``.mp4`` (H.264 through imageio-ffmpeg)."""
    path = Path(path)
    if path.suffix == ".gif":
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    elif path.suffix == ".mp4":
        h, w = frames[0].shape[:2]
        ph, pw = (-h) % 16, (-w) % 16  # H.264 wants multiples of 16
        padded = [np.pad(f, ((0, ph), (0, pw), (0, 0)), constant_values=255) for f in frames]
        imageio_v2.mimwrite(path, padded, fps=fps, macro_block_size=16, quality=8)
    else:
        raise ValueError(f"unsupported animation format {path.suffix!r} (use .gif or .mp4)")
    return path
