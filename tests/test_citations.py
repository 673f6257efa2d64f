"""Every equation number the app shows names its paper, close enough to be read with it; the test prints the table
(file, line, equation, paper) so a reviewer can check each against the papers at a glance (pytest -s)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOWN = [*sorted((ROOT / "demo").glob("*.py")), ROOT / "diffusion" / "explain.py"]  # the text users read
EQUATION = re.compile(r"Eq\. (\d+)")
PAPER = re.compile(r"([A-Z][A-Za-z-]+(?: et al\.| & [A-Z][a-z]+)? (?:19|20)\d\d)")
REACH = 250  # characters before the equation number, within its paragraph


def citations() -> list[tuple[str, int, str, str | None]]:
    """(file, line, "Eq. N", the nearest paper named before it in the same paragraph, or None)."""
    rows = []
    for path in SHOWN:
        text = path.read_text(encoding="utf-8")
        for match in EQUATION.finditer(text):
            before = text[max(0, match.start() - REACH):match.start()]
            before = before.split("\n\n")[-1].split('"""')[-1]  # the same paragraph, the same text block
            papers = PAPER.findall(before)
            rows.append((str(path.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1, match.group(0),
                         papers[-1] if papers else None))
    return rows


def test_every_equation_number_names_its_paper() -> None:
    rows = citations()
    assert len(rows) > 20
    print("\n".join(f"{f}:{line:<5} {eq:<7} {paper}" for f, line, eq, paper in rows))  # the table, with -s
    missing = [f"{f}:{line} {eq}" for f, line, eq, paper in rows if paper is None]
    assert not missing, missing
