"""The lessons' handout: one self-contained HTML file with every lesson's text, the pictures the class
generated with its Show me buttons (embedded as PNG data, laid out in grids), the notes under them, and the
question with its answer folded away, ready to print (A4 or Letter) or to share. The maths is drawn here, as SVG
pictures by matplotlib's mathtext, so the file needs no script, no font and no network to show it.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import numpy as np
from markdown_it import MarkdownIt
from PIL import Image

from demo.lessons import Lesson

logger = logging.getLogger(__name__)

MAX_PICTURE_SIDE = 1600  # larger pictures are scaled down in the handout
MATH_PX = 18  # the maths' type size, the body's
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5;
       font-size: 18px; color: #111; background: #fff; }
h1 { font-size: 1.8em; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #ccc; }
.pictures { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: 0.8rem; margin: 1rem 0; }
figure { margin: 0; break-inside: avoid; } figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; max-height: 32rem; object-fit: contain; image-rendering: pixelated; border: 1px solid #ddd; }
figure.plot img { image-rendering: auto; }
figcaption { font-size: 0.9em; color: #333; } .question { background: #f3f3f3; padding: 0.8rem 1rem; }
.note { font-size: 0.95em; } .empty { color: #555; font-style: italic; }
.math-display { display: block; text-align: center; margin: 0.6rem 0; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8rem 0; } th, td { border: 1px solid #bbb; padding: 0.2rem 0.6rem; }
@page { margin: 14mm; }
@media print {
  body { font-size: 11pt; max-width: none; margin: 0; } h2 { break-before: page; }
  .pictures { grid-template-columns: repeat(4, 1fr); } figure img { max-height: 9cm; }
  .question { break-inside: avoid; }
}
"""
#: $$display$$ then $inline$ maths, as the app's Markdown writes them (demo.common.LATEX).
_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.S)


def to_mathtext(tex: str) -> str:
    """The lessons' LaTeX in the dialect of matplotlib's mathtext: ``\\mathcal N`` -> ``\\mathcal{N}``, sized
    delimiters (``\\big(``) plain, ``\\text{..}`` as upright words, ``\\le`` as ``\\leq``, ``\\sqrt d`` with braces."""
    t = " ".join(tex.split())
    t = re.sub(r"\\(mathcal|mathbb|mathrm|mathbf)\s*([A-Za-z])(?![A-Za-z{])", r"\\\1{\2}", t)
    t = re.sub(r"\\(big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])", "", t)
    t = t.replace(r"\lVert", r"\Vert").replace(r"\rVert", r"\Vert")
    t = re.sub(r"\\text\s*\{([^{}]*)\}",
               lambda m: "\\mathrm{" + m.group(1).replace("\\&", "&").replace(" ", "\\ ") + "}", t)
    t = re.sub(r"\\sqrt\s*([A-Za-z0-9])", r"\\sqrt{\1}", t)
    for short, long in ((r"\le", r"\leq"), (r"\ge", r"\geq")):
        t = re.sub(re.escape(short) + r"(?![a-zA-Z])", lambda _m, long=long: long, t)
    return t


@lru_cache(maxsize=512)
def math_image(tex: str, display: bool = False) -> str:
    """``tex`` (without its dollars) drawn as an ``<img>`` of SVG (glyphs as paths: no font needed), aligned on the
    text's baseline; its ``alt`` is the source. A formula mathtext cannot read is shown as its source in
    ``<code class="tex">`` and logged."""
    import matplotlib
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buffer = io.BytesIO()
    try:
        with matplotlib.rc_context({"mathtext.fontset": "cm", "svg.fonttype": "path", "svg.hashsalt": "handout"}):
            depth = mathtext.math_to_image(f"${to_mathtext(tex)}$", buffer, prop=FontProperties(size=MATH_PX * 0.75),
                                           dpi=72, format="svg")
    except ValueError as error:
        logger.warning("handout: mathtext cannot draw %r (%s)", tex, str(error).strip().splitlines()[-1])
        return f'<code class="tex">{html.escape(tex)}</code>'
    svg = buffer.getvalue()
    size = re.search(rb'height="([0-9.]+)pt"', svg)
    # sized in em of the text around it (the SVG says points: drawn at MATH_PX's 0.75 pt per px), baseline aligned
    height = float(size.group(1)) / (MATH_PX * 0.75) if size else 1.0
    drop = float(depth or 0) / (MATH_PX * 0.75)
    data = base64.b64encode(svg).decode("ascii")
    return (f'<img class="math{" display" if display else ""}" style="height: {height:.3f}em; '
            f'vertical-align: -{drop:.3f}em" alt="{html.escape(tex, quote=True)}" src="data:image/svg+xml;base64,{data}">')


def render_markdown(text: str, markdown: MarkdownIt) -> str:
    """Markdown with $maths$ to HTML: the maths is taken out before the Markdown step (which would eat its
    backslashes), drawn by :func:`math_image`, and put back."""
    drawn: list[str] = []

    def hold(match: re.Match) -> str:
        display = match.group(1) is not None
        picture = math_image(match.group(1) if display else match.group(2), display)
        drawn.append(f'<span class="math-display">{picture}</span>' if display else picture)
        return f"MATHPICTURE{len(drawn) - 1}X"

    rendered = markdown.render(_MATH.sub(hold, text))
    return re.sub(r"MATHPICTURE(\d+)X", lambda m: drawn[int(m.group(1))], rendered)


@dataclass
class LessonPictures:
    """What one lesson's Show me produced: pictures (uint8 arrays) with captions, and the notes beside them."""

    pictures: list[tuple[np.ndarray, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def png_data_url(picture: np.ndarray) -> str:
    """A uint8 (H, W), (H, W, 3) or (H, W, 4) picture as a PNG data URL (scaled down beyond MAX_PICTURE_SIDE)."""
    image = Image.fromarray(np.asarray(picture, np.uint8))
    if max(image.size) > MAX_PICTURE_SIDE:
        image.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def handout_html(lessons: Sequence[Lesson], shown: dict[int, LessonPictures], title: str = "Diffusion Classroom",
                 day: date | None = None) -> str:
    """The handout of ``lessons``; ``shown`` holds, per lesson number (1-based), what the class generated."""
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")  # lesson text is ours; never raw HTML
    day = day or date.today()
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}: lessons</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}: lessons</h1>",
             f"<p>A course through DDPM (Ho et al. 2020) and latent diffusion (Rombach et al. 2022). Handout of "
             f"{day.isoformat()}: the pictures are the ones the class generated with the live models.</p>"]
    for number, lesson in enumerate(lessons, start=1):
        parts += [f'<section id="lesson-{number}">', f"<h2>{html.escape(lesson.title)}</h2>",
                  render_markdown(lesson.text, markdown)]
        if lesson.predict is not None:
            parts.append(render_markdown(f"**Predict first.** {lesson.predict}", markdown))
        got = shown.get(number)
        if got is None or not (got.pictures or got.notes):
            parts.append('<p class="empty">(Not shown in class: press its Show me button in the app.)</p>')
        else:
            parts.append('<div class="pictures">')
            for picture, caption in got.pictures:
                height, width = picture.shape[:2]
                kind = " ".join(k for k, on in (("wide", width >= 2 * height), ("plot", picture.ndim == 3 and
                                                 max(height, width) >= 400 and picture.shape[-1] in (3, 4))) if on)
                parts.append(f'<figure class="{kind}"><img src="{png_data_url(picture)}" alt="{html.escape(caption)}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            parts.append("</div>")
            for note in got.notes:
                parts.append(f'<div class="note">{render_markdown(note, markdown)}</div>')
        parts += ['<div class="question">', render_markdown(f"**Question for the class.** {lesson.question}", markdown),
                  "<details><summary>Answer</summary>", render_markdown(lesson.answer, markdown), "</details>",
                  "</div>", "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
