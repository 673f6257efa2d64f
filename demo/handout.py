"""The lessons' handout: one self-contained HTML file with every lesson's text, the pictures the class
generated with its Show me buttons (embedded as PNG data), the notes under them, and the question with its
answer folded away, ready to print or to share. Equations stay in LaTeX ($...$), readable as text; no script
and no network are needed to open it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from markdown_it import MarkdownIt
from PIL import Image

from demo.lessons import Lesson

MAX_PICTURE_SIDE = 1600  # larger pictures are scaled down in the handout
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5;
       font-size: 18px; color: #111; background: #fff; }
h1 { font-size: 1.8em; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #ccc; }
figure { margin: 1rem 0; } figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; } .question { background: #f3f3f3; padding: 0.8rem 1rem; }
.note { font-size: 0.95em; } .empty { color: #666; font-style: italic; }
@media print { h2 { break-before: page; } details { display: block; } }
"""


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
    markdown = MarkdownIt("commonmark", {"html": False})  # lesson text is ours, but never pass raw HTML through
    day = day or date.today()
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}: lessons</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}: lessons</h1>",
             f"<p>A course through DDPM (Ho et al. 2020) and latent diffusion (Rombach et al. 2022). Handout of "
             f"{day.isoformat()}: the pictures are the ones the class generated with the live models.</p>"]
    for number, lesson in enumerate(lessons, start=1):
        parts += [f'<section id="lesson-{number}">', f"<h2>{html.escape(lesson.title)}</h2>",
                  markdown.render(lesson.text)]
        got = shown.get(number)
        if got is None or not (got.pictures or got.notes):
            parts.append('<p class="empty">(Not shown in class: press its Show me button in the app.)</p>')
        else:
            for picture, caption in got.pictures:
                parts.append(f'<figure><img src="{png_data_url(picture)}" alt="{html.escape(caption)}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            for note in got.notes:
                parts.append(f'<div class="note">{markdown.render(note)}</div>')
        parts += ['<div class="question">', markdown.render(f"**Question for the class.** {lesson.question}"),
                  "<details><summary>Answer</summary>", markdown.render(lesson.answer), "</details>", "</div>",
                  "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
