"""Export of the step-by-step views: GIF and MP4 animations of a trajectory (imageio), and the one
temporary folder that downloads are written to."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
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


class ExportDir:
    """The one temporary folder the app writes downloads into, cleaned on a schedule and at exit.

    Nothing is created until a file is written: :meth:`path` makes the folder (``prefix`` + random,
    under the system's temporary directory) and a fresh sub-folder per download, so two users'
    files never meet. Every ``interval_s`` (and at each new download) sub-folders older than
    ``max_age_s`` are removed; the UI has long since copied them into its own cache by then. The
    whole folder goes at interpreter exit.
    """

    def __init__(self, max_age_s: float = 600.0, interval_s: float = 300.0, prefix: str = "diffusion-classroom-"):
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.prefix = prefix
        self.root: Path | None = None
        self._lock = threading.Lock()
        self._cleaner: threading.Thread | None = None

    def path(self, name: str) -> Path:
        """A new file path ``<root>/<random>/<name>`` (its folder exists; the file does not yet)."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"an export name must be a plain file name, got {name!r}")
        with self._lock:
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
                atexit.register(self.remove)
                self._cleaner = threading.Thread(target=self._clean_forever, name="export-cleaner", daemon=True)
                self._cleaner.start()
            root = self.root
        self.sweep()
        return Path(tempfile.mkdtemp(dir=root)) / name

    def sweep(self, now: float | None = None) -> int:
        """Remove the downloads older than ``max_age_s``; returns how many."""
        root = self.root
        if root is None or not root.is_dir():
            return 0
        now = time.time() if now is None else now
        removed = 0
        for folder in root.iterdir():
            try:
                if now - folder.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:  # removed meanwhile by another sweep
                continue
        return removed

    def remove(self) -> None:
        """Remove the whole folder (at exit)."""
        with self._lock:
            root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _clean_forever(self) -> None:
        while self.root is not None:
            time.sleep(self.interval_s)
            self.sweep()
