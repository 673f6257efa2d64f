"""The app's matplotlib figures, built with ``matplotlib.figure.Figure``: no pyplot, no backend switch.

Pyplot keeps a global list of figures and is not thread-safe; a bare ``Figure`` belongs to its
caller. Matplotlib's text layout is not thread-safe either, so every figure is built under
:data:`demo.common.FIGURE_LOCK` and drawn under it by :class:`demo.common.LockedPlot`. Sizes and
fonts are chosen to be read on a projector.
"""

from __future__ import annotations

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
