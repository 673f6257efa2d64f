"""The app's matplotlib figures, built with ``matplotlib.figure.Figure``: no pyplot, no backend switch.

Pyplot keeps a global list of figures and is not thread-safe; a bare ``Figure`` belongs to its
caller. Matplotlib's text layout is not thread-safe either, so every figure is built under
:data:`demo.common.FIGURE_LOCK` and drawn under it by :class:`demo.common.LockedPlot`. Sizes and
fonts are chosen to be read on a projector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from demo.common import FIGURE_LOCK
from diffusion.studio import ScheduleCurves


def schedule_figure(curves: ScheduleCurves, timestep: float | None,
                    family: dict[str, ScheduleCurves] | None = None) -> Figure:
    """beta_t, alpha-bar_t and log-SNR(t): the model's schedule (thick black), the classic ones (thin),
    the current step marked."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(10, 2.7), dpi=90)
        axes = fig.subplots(1, 3)
        series = [("betas", r"$\beta_t$"), ("alphas_cumprod", r"$\bar\alpha_t$ (signal kept)"),
                  ("log_snr", r"log SNR$(t)=\log\,\bar\alpha_t/(1-\bar\alpha_t)$")]
        for ax, (attr, title) in zip(axes, series, strict=True):
            for name, other in (family or {}).items():
                ax.plot(other.timesteps, getattr(other, attr), lw=1, alpha=0.7, label=name)
            ax.plot(curves.timesteps, getattr(curves, attr), color="black", lw=2.2, label="this model")
            ax.set_title(title)
            ax.set_xlabel("t")
            ax.grid(alpha=0.3)
            if timestep is not None:
                ax.axvline(timestep, color="crimson", lw=1.5)
        if family:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        return fig


@dataclass(frozen=True)
class SchedulePicture:
    """The schedule figure of one run, drawn once as uint8 RGB (H, W, 3), with what it takes to move the
    step marker: per panel, the pixel rows it spans and x pixel = ``scale`` * t + ``offset``.

    Scrubbing and Play redraw only the marker, a few microseconds of numpy, instead of a matplotlib
    figure (100 ms or more of a busy CPU under a class's load).
    """

    base: np.ndarray
    panels: tuple[tuple[int, int, float, float], ...]  # (top row, bottom row, scale, offset)

    def at(self, timestep: float | None) -> np.ndarray:
        """The picture with a crimson marker at training timestep ``timestep`` (none for None)."""
        out = self.base.copy()
        if timestep is not None:
            for top, bottom, scale, offset in self.panels:
                x = int(round(scale * float(timestep) + offset))
                out[top:bottom, max(0, x - 1):x + 1] = MARKER
        return out

    @property
    def nbytes(self) -> int:
        return self.base.nbytes


MARKER = (220, 20, 60)  # crimson, as the figure's own marker


def schedule_picture(curves: ScheduleCurves, family: dict[str, ScheduleCurves] | None = None) -> SchedulePicture:
    """:func:`schedule_figure` without a marker, rendered once, for :meth:`SchedulePicture.at`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with FIGURE_LOCK:
        fig = schedule_figure(curves, None, family)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        height = base.shape[0]
        panels = []
        t0, t1 = float(curves.timesteps[0]), float(curves.timesteps[-1])
        for ax in fig.axes:
            (x0, y0), (x1, y1) = ax.transData.transform([(t0, 0.0), (t1, 0.0)])
            box = ax.get_window_extent()
            scale = (x1 - x0) / (t1 - t0) if t1 != t0 else 0.0
            # display coordinates start at the bottom; picture rows at the top
            panels.append((int(height - box.y1), int(height - box.y0), scale, x0 - scale * t0))
    return SchedulePicture(base, tuple(panels))
