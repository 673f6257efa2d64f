"""The README a newcomer reads in five minutes, the documents it links, and figures that come from files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# words about how the work was done rather than what the project is: they do not belong in the repository
PROCESS_WORDS = re.compile(r"\bissue'?s?\b|\bthis session\b|\b(?:later|next|previous|new) session\b|\bsessions end before\b"
                           r"|\bTODO\b|\bFIXME\b|\bwork in progress\b", re.IGNORECASE)
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".ini", ".cfg", ".yml", ".yaml", ""}


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    body = README[README.index("# Diffusion Classroom\n"):]
    assert len(README.splitlines()) <= 250
    commands = re.findall(r"```bash\n(.+?)\n```", body)
    assert len(body[:body.index("## The tabs")].splitlines()) < 60  # the commands come first
    run_app, run_tests = commands[:2]
    assert run_app.endswith("&& diffusion-classroom") and run_tests.endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()[-1]
    assert ci == run_tests.replace("pip install", "python -m pip install -q"), "CI runs exactly the README's test command"
    assert 'python -m pytest -m "not slow"' in body


def test_every_document_is_linked_and_every_link_resolves() -> None:
    links = set(re.findall(r"\]\(((?:docs|assets)/[^)#]+)\)", README))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= links
    for link in links:
        assert (ROOT / link).is_file(), link
    for doc in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / link).exists() or (ROOT / link).exists(), (doc.name, link)


def test_no_process_words_anywhere_in_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or name.endswith("test_docs.py"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{i}: {line.strip()[:100]}" for i, line in enumerate(text.splitlines(), 1)
                  if PROCESS_WORDS.search(line)]
    assert found == [], "\n".join(found[:20])


def test_the_gate_figures_in_the_docs_are_the_results_files() -> None:
    """A figures block in docs/ names its results file; rendering that file again gives the block, byte for
    byte (a gate run that changes the weights' figures makes this fail until the docs are regenerated)."""
    from diffusion.metrics.cards import results_table
    from tests.helpers import card_metrics

    blocks = 0
    for doc in (ROOT / "docs").glob("*.md"):
        text = doc.read_text()
        for match in re.finditer(r"<!-- results: (\S+) -->\n((?:\|.*\n)+)", text):
            record = json.loads((ROOT / match.group(1)).read_text())
            assert match.group(2) == results_table(record, card_metrics((ROOT / match.group(1)).parent, record)), doc.name
            blocks += 1
    assert blocks >= 3
