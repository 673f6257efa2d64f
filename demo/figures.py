"""The app's matplotlib figures, built with ``matplotlib.figure.Figure``: no pyplot, no backend switch.

Pyplot keeps a global list of figures and is not thread-safe; a bare ``Figure`` belongs to its
caller. Matplotlib's text layout is not thread-safe either, so every figure is built under
:data:`demo.common.FIGURE_LOCK` and drawn under it by :class:`demo.common.LockedPlot`. Sizes and
fonts are chosen to be read on a projector.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from demo.common import FIGURE_LOCK
from diffusion.studio import (
    Compression,
    Layout,
    NoiseField,
    ParticlePaths,
    Progressive,
    ScheduleCurves,
    SharedLatent,
    UpdatePictures,
)

MIN_POINTS = 14  # the smallest text in a figure, for a projector at the back of a room
# Okabe-Ito colours (safe for the common colour-vision deficiencies), each with its own line style
LINE_STYLES = (("#E69F00", "--"), ("#56B4E9", ":"), ("#009E73", "-."), ("#CC79A7", (0, (5, 2, 1, 2))),
               ("#D55E00", (0, (1, 1))))


def readable(fig: Figure) -> Figure:
    """Every text of ``fig`` at least :data:`MIN_POINTS` points (titles, axis labels, tick labels, legends,
    now and for ticks made later), on an opaque white face so that the figure reads the same in dark mode;
    then lay it out."""
    fig.patch.set_facecolor("white")
    fig.patch.set_alpha(1.0)
    for ax in fig.axes:
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            text.set_fontsize(max(MIN_POINTS, text.get_fontsize()))
        ax.tick_params(which="both", labelsize=MIN_POINTS)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.get_texts():
                text.set_fontsize(max(MIN_POINTS, text.get_fontsize()))
    fig.tight_layout()
    return fig


def schedule_figure(curves: ScheduleCurves, timestep: float | None,
                    family: dict[str, ScheduleCurves] | None = None) -> Figure:
    """beta_t, alpha-bar_t and log-SNR(t): the model's schedule (thick black), the classic ones (thin),
    the current step marked."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(13, 3.6), dpi=90)
        axes = fig.subplots(1, 3)
        series = [("betas", r"$\beta_t$ (log axis)"), ("alphas_cumprod", r"$\bar\alpha_t$ (signal kept)"),
                  ("log_snr", r"log SNR$(t)=\log\,\bar\alpha_t/(1-\bar\alpha_t)$")]
        for ax, (attr, title) in zip(axes, series, strict=True):
            mine = np.asarray(getattr(curves, attr), dtype=np.float64)
            ax.plot(curves.timesteps, mine, color="black", lw=2.2, label="this model", zorder=2)
            for (name, other), (colour, style) in zip((family or {}).items(), LINE_STYLES):
                theirs = np.asarray(getattr(other, attr), dtype=np.float64)
                if theirs.shape == mine.shape and np.allclose(theirs, mine, rtol=1e-6, atol=0, equal_nan=True):
                    # a schedule that is this model's own lies exactly on the black line: drawn over it with
                    # markers, and said so in the legend
                    ax.plot(other.timesteps, theirs, color=colour, ls="none", marker="o", ms=7,
                            markevery=max(1, len(theirs) // 8), label=f"{name} (= this model)", zorder=3)
                else:
                    ax.plot(other.timesteps, theirs, color=colour, ls=style, lw=1.6, label=name, zorder=1)
            ax.set_title(title)
            ax.set_xlabel("t")
            ax.grid(alpha=0.3)
            if attr == "betas":  # cosine's beta spikes to 0.999 at the end: a log axis keeps the others readable
                ax.set_yscale("log")
            if timestep is not None:
                ax.axvline(timestep, color="crimson", lw=1.5)
        if family:
            axes[0].legend()
        return readable(fig)


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
        out = self.base.copy()  # the base is shared by every run of the schedule: never drawn on
        if timestep is not None:
            for top, bottom, scale, offset in self.panels:
                x = int(round(scale * float(timestep) + offset))
                out[top:bottom, max(0, x - 1):x + 1] = MARKER
        return out

    @property
    def nbytes(self) -> int:
        return self.base.nbytes


MARKER = (220, 20, 60)  # crimson, as the figure's own marker


SCHEDULE_PICTURES = 8  # the schedules drawn and kept at once (each a few hundred kB; one per model in practice)
_drawn: OrderedDict[bytes, SchedulePicture] = OrderedDict()


def schedule_picture(curves: ScheduleCurves) -> SchedulePicture:
    """:func:`schedule_figure` without a marker, rendered once, for :meth:`SchedulePicture.at`. Every run of a
    model has its training schedule: the picture is drawn once per schedule (about 0.7 s of matplotlib on a
    2-core CPU) and shared, read-only, by the runs that have it (the :data:`SCHEDULE_PICTURES` most recent)."""
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a, np.float64).tobytes()
                                  for a in (curves.timesteps, curves.betas, curves.alphas_cumprod))).digest()
    with FIGURE_LOCK:
        if key in _drawn:
            _drawn.move_to_end(key)
            return _drawn[key]
        picture = _draw_schedule(curves)
        _drawn[key] = picture
        while len(_drawn) > SCHEDULE_PICTURES:
            _drawn.popitem(last=False)
        return picture


def _draw_schedule(curves: ScheduleCurves) -> SchedulePicture:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with FIGURE_LOCK:
        fig = schedule_figure(curves, None)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        base.setflags(write=False)  # shared by every run of this schedule
        height = base.shape[0]
        panels = []
        t0, t1 = float(curves.timesteps[0]), float(curves.timesteps[-1])
        for ax in fig.axes:
            (x0, _), (x1, _) = ax.transData.transform([(t0, 1.0), (t1, 1.0)])  # y = 1: valid on a log axis too
            box = ax.get_window_extent()
            scale = (x1 - x0) / (t1 - t0) if t1 != t0 else 0.0
            # display coordinates start at the bottom; picture rows at the top
            panels.append((int(height - box.y1), int(height - box.y0), scale, x0 - scale * t0))
    return SchedulePicture(base, tuple(panels))


# ----- the playground -----
# Okabe-Ito; every pair of lines also differs in line style.
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#999999"


def _cloud_axes(ax, data: np.ndarray | None, extent: float, title: str) -> None:  # noqa: ANN001 - an Axes
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=3, color="#cccccc", zorder=0, label="data")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=13)
    ax.tick_params(labelsize=10)


def field_figure(field: NoiseField, data: np.ndarray | None, extent: float, show_score: bool = False) -> Figure:
    """The learned noise field at one t as arrows: -eps_theta (the direction that removes the predicted noise,
    the score's direction) over the data in grey; arrow length scaled to fit."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(6.4, 6.2), dpi=90)
        ax = fig.subplots()
        _cloud_axes(ax, data, extent, f"t = {field.timestep}:  " + (
            r"score $-\epsilon_\theta/\sqrt{1-\bar\alpha_t}$" if show_score else r"$-\epsilon_\theta(x, t)$"))
        arrows = field.score if show_score else -field.eps
        ax.quiver(field.points[..., 0], field.points[..., 1], arrows[..., 0], arrows[..., 1], color=BLUE,
                  angles="xy", pivot="tail", width=0.004)
        ax.set_xlabel(rf"$\bar\alpha_t$ = {field.alpha_bar:.4f}", fontsize=12)
        return readable(fig)


def paths_figure(paths: ParticlePaths, data: np.ndarray | None, extent: float) -> Figure:
    """The same starting points under DDPM (two noise seeds: vermillion solid and dashed) and DDIM (blue)."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(12, 6), dpi=90)
        left, right = fig.subplots(1, 2)
        _cloud_axes(left, data, extent, f"DDPM, {paths.steps} steps: fresh noise every step")
        _cloud_axes(right, data, extent, f"DDIM (eta = 0), {paths.steps} steps: an ODE path")
        for k in range(paths.ddpm.shape[1]):
            left.plot(paths.ddpm[:, k, 0], paths.ddpm[:, k, 1], color=VERMILLION, lw=1.2,
                      label="noise seed 1" if k == 0 else None)
            left.plot(paths.ddpm_other_seed[:, k, 0], paths.ddpm_other_seed[:, k, 1], color=BLUE, lw=1.0, ls="--",
                      label="noise seed 2" if k == 0 else None)
            right.plot(paths.ddim[:, k, 0], paths.ddim[:, k, 1], color=BLUE, lw=1.6)
        for ax, p in ((left, paths.ddpm), (right, paths.ddim)):
            ax.scatter(p[0, :, 0], p[0, :, 1], marker="o", s=40, facecolor="white", edgecolor="black", zorder=3,
                       label="start x_T")
            ax.scatter(p[-1, :, 0], p[-1, :, 1], marker="s", s=30, color="black", zorder=3, label="end x_0")
        left.legend(fontsize=10, loc="lower left")
        return readable(fig)


def loss_by_t_figure(timesteps: np.ndarray, loss: np.ndarray, alpha_bar: np.ndarray) -> Figure:
    """The trained model's loss against t (blue), with the signal fraction alpha-bar_t (grey, dashed) on a
    second axis."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(9, 3.6), dpi=90)
        ax = fig.subplots()
        ax.plot(timesteps, loss, color=BLUE, lw=2.4, marker="o", label=r"loss $\|\epsilon-\epsilon_\theta\|^2$ / 2")
        ax.set_xlabel("t", fontsize=12)
        ax.set_ylabel("loss (fresh data)", fontsize=12)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(np.arange(len(alpha_bar)), alpha_bar, color=GREY, lw=1.6, ls="--", label=r"$\bar\alpha_t$")
        twin.set_ylabel(r"$\bar\alpha_t$ (signal kept)", fontsize=12)
        twin.set_ylim(0, 1.02)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=11, loc="upper right")
        return readable(fig)


#: Canvas colours of the shapes world's backgrounds, for the layout figure.
_CANVAS = {"white": "#f5f5f5", "gray": "#808080", "black": "#101010"}


def layout_figure(layouts: list[Layout | None], most: int = 4) -> Figure | None:
    """The planned layouts of the first ``most`` images (diffusion.layout): the 3x3 grid of the 64-pixel canvas
    on its planned background, each object's region as a box in its own Okabe-Ito colour and line style,
    labelled with its words. None when no image was drawn by layout."""
    shown = [(i, layout) for i, layout in enumerate(layouts[:most]) if layout is not None]
    if not shown:
        return None
    with FIGURE_LOCK:
        fig = Figure(figsize=(3.6 * len(shown), 4.2))
        for k, (i, layout) in enumerate(shown):
            ax = fig.add_subplot(1, len(shown), k + 1)
            ax.set_facecolor(_CANVAS.get(layout.background, "#f5f5f5"))
            for edge in (64 / 3, 128 / 3):
                ax.axvline(edge, color="#999999", lw=1)
                ax.axhline(edge, color="#999999", lw=1)
            for obj, (colour, style) in zip(layout.objects, LINE_STYLES, strict=False):
                x0, y0, x1, y1 = obj.box
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style,
                                       linewidth=4))
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, obj.words.phrase.removeprefix("a ").replace(" ", "\n"),
                        ha="center", va="center", fontsize=MIN_POINTS, color="black",
                        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": colour, "boxstyle": "round"})
            ax.set_xlim(0, 64)
            ax.set_ylim(64, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"image {i + 1}: {layout.relation}")
        return readable(fig)



def labelled_strip(tiles: list[np.ndarray], labels: list[str], font_px: int = 20, pad: int = 4) -> np.ndarray:
    """uint8 tiles (H, W) or (H, W, 3), all one height, side by side on white with each one's label above it, in
    type read from the back of a room; a column is as wide as its tile or its label, whichever is wider (labels
    never overlap). uint8 RGB (font_px + 12 + H, total width, 3)."""
    from PIL import Image, ImageDraw, ImageFont
    from matplotlib import font_manager

    rgb = [np.repeat(t[..., None], 3, axis=-1) if t.ndim == 2 else t for t in tiles]
    h = rgb[0].shape[0]
    # matplotlib's DejaVu Sans (shipped with it): Greek, hats and subscripts, which Pillow's default font lacks
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size=font_px)
    widths = [max(p.shape[1], int(np.ceil(font.getlength(label))) + 8) for p, label in zip(rgb, labels, strict=True)]
    top = font_px + 12
    canvas = Image.new("RGB", (sum(widths) + pad * (len(widths) - 1), top + h), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for picture, label, width in zip(rgb, labels, widths, strict=True):
        canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (left + (width - picture.shape[1]) // 2, top))
        draw.text((left + width // 2, top // 2), label, fill="black", font=font, anchor="mm")
        left += width + pad
    return np.asarray(canvas)


def update_strip(update: UpdatePictures, side: int = 120) -> np.ndarray:
    """A step's update as pictures that add up (diffusion.lab.trajectory.UpdatePictures): c0 x̂0, + ct x_t, + σz,
    = x_{t-1}, each enlarged to about ``side`` pixels and labelled with its coefficient."""
    def big(picture: np.ndarray) -> np.ndarray:
        factor = max(1, side // max(picture.shape[:2]))
        return picture.repeat(factor, 0).repeat(factor, 1)

    labels = [f"{update.coef_x0:.3f} · x̂₀", f"+ {update.coef_xt:.3f} · xₜ", f"+ σz, σ = {update.noise_std:.3f}",
              "= xₜ₋₁"]
    return labelled_strip([big(p) for p in (update.x0_term, update.xt_term, update.noise_term, update.result)],
                          labels, font_px=18, pad=12)


def progressive_grid(view: Progressive, side: int = 64) -> np.ndarray:
    """Ho et al. 2020, Fig. 6 as a picture: one row per sample, one column per shown step, each column labelled
    with its t (the last column is the sample itself, labelled x₀)."""
    def big(picture: np.ndarray) -> np.ndarray:
        factor = max(1, side // max(picture.shape[:2]))
        return picture.repeat(factor, 0).repeat(factor, 1)

    n, k = view.pred_x0.shape[:2]
    columns = []
    for j in range(k):
        tiles = [big(view.pred_x0[i, j]) for i in range(n)]
        gap = np.full((4, *tiles[0].shape[1:]), 255, np.uint8)
        columns.append(np.concatenate([part for tile in tiles for part in (tile, gap)][:-1]))
    labels = [f"t = {t:.0f}" for t in view.timesteps[:-1]] + ["x₀"]
    return labelled_strip(columns, labels, font_px=16, pad=6)


def shared_latent_grid(view: SharedLatent, side: int = 64) -> np.ndarray:
    """Ho et al. 2020, Fig. 7 as a picture: one row per shared x_t (t falling down the rows), its x_t first, then
    the samples continued from it, then the original run's own x_0."""
    def big(picture: np.ndarray) -> np.ndarray:
        factor = max(1, side // max(picture.shape[:2]))
        return picture.repeat(factor, 0).repeat(factor, 1)

    def column(pictures: list[np.ndarray]) -> np.ndarray:
        tiles = [big(p) for p in pictures]
        gap = np.full((4, *tiles[0].shape[1:]), 255, np.uint8)
        return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1])

    k, m = view.samples.shape[:2]
    columns = [column(list(view.x_t))] + [column([view.samples[i, j] for i in range(k)]) for j in range(m)]
    columns.append(column([view.original] * k))
    labels = ["shared xₜ"] + [f"sample {j + 1}" for j in range(m)] + ["the run's x₀"]
    return labelled_strip(columns, labels, font_px=16, pad=6)


#: Marker per downsampling factor in the compression figure (with the Okabe-Ito colours: told apart without colour)
_FACTOR_MARKERS = ("o", "s", "D", "^", "v", "P")


def compression_figure(view: Compression, longer: tuple[str, float] | None = None) -> Figure:
    """Rombach et al.'s trade by downsampling factor, measured here: seconds per sample (a guided DDIM run of
    ``view.steps`` steps, this machine, log axis) against the best a latent model at that factor could score (the
    judge's accuracy, all attributes right, on the autoencoder's reconstructions of the gate's scenes), each point
    labelled with f, the latent shape and the reconstruction PSNR. Points without gate figures are left out.
    ``longer``: (label, accuracy) of an f = 4 autoencoder trained longer, drawn hollow beside f = 4's point."""
    with FIGURE_LOCK:
        fig = Figure(figsize=(10, 4.4), dpi=90)
        ax = fig.subplots()
        for k, row in enumerate(view.rows):
            if "exact" not in row.bound:
                continue
            colour = LINE_STYLES[k % len(LINE_STYLES)][0]
            x, y = row.seconds_per_sample(view.steps, view.guided), row.bound["exact"]
            ax.plot([x], [y], marker=_FACTOR_MARKERS[k % len(_FACTOR_MARKERS)], markersize=16, color=colour,
                    markeredgecolor="black", linestyle="none")
            c, h, w = row.cost.shape
            quality = "lossless" if "psnr" not in row.bound else f"{row.bound['psnr']:.1f} dB"
            ax.annotate(f"f = {row.factor}\n{c}x{h}x{w}, {quality}", (x, y), textcoords="offset points",
                        xytext=(16, 0), fontsize=MIN_POINTS, va="center")
        four = next((r for r in view.rows if r.factor == 4 and "exact" in r.bound), None)
        if longer is not None and four is not None:
            x = four.seconds_per_sample(view.steps, view.guided)
            ax.plot([x], [longer[1]], marker="D", markersize=16, markerfacecolor="none", markeredgecolor="black",
                    markeredgewidth=2, linestyle="none")
            ax.annotate(longer[0], (x, longer[1]), textcoords="offset points", xytext=(-16, 0), fontsize=MIN_POINTS,
                        va="center", ha="right")
        ax.set_xscale("log")
        # plain numbers (0.2, 0.5, 1, 2, 5, ...), not powers of ten; the other minor labels crowd a projector
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
        ax.set_xlabel(f"seconds per sample here (DDIM {view.steps}{', guided' if view.guided else ''}; log axis)")
        ax.set_ylabel("best reachable accuracy")
        ax.set_title("Cost against the quality a latent model could reach, by downsampling factor f")
        ax.set_ylim(min([0.5] + [r.bound["exact"] - 0.1 for r in view.rows if "exact" in r.bound]), 1.12)
        left, right = ax.get_xlim()
        ax.set_xlim(left / 4, right * 3)  # room for the labels on either side
        ax.grid(alpha=0.3)
        return readable(fig)
