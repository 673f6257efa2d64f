"""Drive the real app in headless Chromium (Playwright with Debian's /usr/bin/chromium).

Used by ``tests/test_browser.py`` and ``tests/test_browser_lessons.py`` (tiny models) and, for the README's
screenshots on the shipped models, as a command:

    python -m tests.browser --out assets            # each tab
    python -m tests.browser --out assets --lessons  # each lesson in presenter mode
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_marks() -> list:
    """The marks of a browser test module: slow, and skipped where Debian's Chromium is not installed."""
    import pytest

    return [pytest.mark.slow, pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")]


@contextmanager
def browser_page(url: str, width: int = 1280, height: int = 1000, requests: list[str] | None = None) -> Iterator[object]:
    """A page at ``url`` once the app is on it; ``requests`` collects the address of every request it sends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": height})
        if requests is not None:
            page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        page.wait_for_selector("#lessons", timeout=60_000)  # the first tab
        try:
            yield page
        finally:
            browser.close()


# The first <img> inside #id decoded by the browser: `img`, and its RGBA bytes `d` (null while none is loaded).
# Each check below is a JavaScript function of (id, ...) that starts with this.
DECODE = """
    const img = document.querySelector(`#${id} img`);
    let d = null;
    if (img && img.complete && img.naturalWidth) {
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        d = ctx.getImageData(0, 0, c.width, c.height).data;
    }
"""


# The decoded size and pixel range of that <img>, or null while none is loaded or its src is still `prev`.
IMAGE_INFO = DECODE + """
    if (!d || img.src === prev) return null;
    let min = 255, max = 0;
    for (let i = 0; i < d.length; i += 4) { min = Math.min(min, d[i]); max = Math.max(max, d[i]); }
    return {ok: true, width: img.naturalWidth, height: img.naturalHeight, min, max, src: img.src};
"""


# Every visible text on the page whose contrast against its background is under WCAG AA's 4.5:1, as
# [ratio, colour, background, font size, element, text]. The background is the first opaque one up the tree with
# translucent ones composed over it; opacity is multiplied up the tree. Text the page hides on purpose
# (transparent colour, inside disabled buttons, which WCAG exempts) and drawn maths (KaTeX, SVG) are skipped.
LOW_CONTRAST = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = (rgb) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]); };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let base = [255, 255, 255];
    for (const c of layers.reverse()) base = base.map((v, i) => v * (1 - c[3]) + c[i] * c[3]);
    return base; };
  const opacity = (el) => { let o = 1; for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity); return o; };
  const bad = [], seen = new Set();
  const walker = document.createTreeWalker(document.querySelector('.gradio-container') || document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (el.closest('svg, .katex, [aria-hidden=true], button:disabled')) continue;
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden') continue;
    const fg = parse(style.color);
    if (!fg || fg[3] === 0) continue;
    const bg = background(el), alpha = fg[3] * opacity(el);
    const c = ratio(bg.map((v, i) => v * (1 - alpha) + fg[i] * alpha), bg);
    if (c < 4.5) bad.push([Math.round(c * 100) / 100, style.color, bg.map(Math.round).join(','), style.fontSize,
                           el.tagName + '.' + el.className, walker.currentNode.textContent.trim().slice(0, 40)]);
  }
  return bad;
}"""


def image_pixels(page, elem_id: str) -> list[int]:
    """The RGBA bytes of the first <img> inside #elem_id, decoded by the browser (once it has loaded)."""
    handle = page.wait_for_function("(id) => {" + DECODE + "return d && Array.from(d); }", arg=elem_id,
                                    timeout=60_000)  # one check: see wait_for_image
    return handle.json_value()


def colour_columns(page, elem_id: str, colours: dict[str, tuple[int, int, int]],
                   tolerance: int = 30) -> dict[str, list[int]]:
    """For each named RGB colour, the column (x) of every pixel of the first <img> inside #elem_id within
    ``tolerance`` of it (the sum of the channels' differences): decoded and counted in the browser, so only the
    matches cross to Python, not every pixel."""
    handle = page.wait_for_function("([id, colours, tolerance]) => {" + DECODE + """
        if (d === null) return null;
        const width = img.naturalWidth, found = {};
        for (const [name, [r, g, b]] of Object.entries(colours)) {
            const xs = [];
            for (let i = 0; i < d.length; i += 4)
                if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < tolerance) xs.push((i / 4) % width);
            found[name] = xs;
        }
        return found; }""", arg=[elem_id, colours, tolerance], timeout=60_000)  # one check: see wait_for_image
    return handle.json_value()


def wait_for_pixels(page, elem_id: str, expected: list[int], equal: bool = True, timeout_s: float = 120) -> None:
    """Wait until the first <img> inside #elem_id, decoded, has exactly the RGBA bytes ``expected`` (``equal``
    False: until it has other bytes). Streamed previews come and go before the final picture: polling the picture
    itself avoids guessing which one is shown."""
    page.wait_for_function(
        "([id, want, equal]) => {" + DECODE + """
            if (d === null) return false;
            return (d.length === want.length && d.every((v, i) => v === want[i])) === equal; }""",
        arg=[elem_id, expected, equal], timeout=timeout_s * 1000)


def wait_for_image(page, elem_id: str, previous_src: str | None = None, timeout_s: float = 120) -> dict:
    """Wait for a loaded <img> inside #elem_id whose src is not ``previous_src``; return its decoded size and
    pixel range. Waiting and decoding are one check in the browser: a streamed update can swap the picture
    between two separate calls (a CI failure: the picture had loaded, then was not decodable a moment later)."""
    handle = page.wait_for_function(
        "([id, prev]) => {" + IMAGE_INFO + "}", arg=[elem_id, previous_src], timeout=timeout_s * 1000)
    return handle.json_value()


def wait_for_new_text(page, elem_id: str, old: str, text: str, timeout_s: float = 120) -> None:
    """Wait until #elem_id's text differs from ``old`` and contains ``text`` (a status that repeats its wording)."""
    page.wait_for_function(
        "([id, old, t]) => { const s = document.querySelector(`#${id}`)?.innerText || ''; return s !== old && s.includes(t); }",
        arg=[elem_id, old, text], timeout=timeout_s * 1000)


def wait_for_text(page, elem_id: str, text: str, timeout_s: float = 120) -> None:
    page.wait_for_function(
        "([id, t]) => (document.querySelector(`#${id}`)?.innerText || '').includes(t)",
        arg=[elem_id, text], timeout=timeout_s * 1000)


def screenshots(url: str, out: Path) -> list[Path]:
    """One screenshot per tab after its main action, with the app's defaults."""
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with browser_page(url) as page:
        page.locator("#lesson-1-show").click()  # the first lesson's live view
        wait_for_image(page, "lesson-1-view", timeout_s=300)
        page.screenshot(path=str(out / "screenshot-lessons.png"), full_page=True)
        saved.append(out / "screenshot-lessons.png")
        page.get_by_role("tab", name="DDPM sampling").click()
        page.get_by_role("button", name="Sample").click()
        wait_for_text(page, "ddpm-status", "UNet calls", 300)
        wait_for_text(page, "ddpm-status", "Step 50/50", 300)
        page.screenshot(path=str(out / "screenshot-sampling.png"), full_page=True)
        saved.append(out / "screenshot-sampling.png")
        page.get_by_role("tab", name="Step lab").click()
        page.get_by_role("button", name="Run the reverse process").click()
        wait_for_text(page, "lab-status", "Done", 300)
        page.screenshot(path=str(out / "screenshot-steps.png"), full_page=True)
        saved.append(out / "screenshot-steps.png")
        # the cross-attention view of the embedded text model
        page.locator("#lab-model input").click()
        page.get_by_role("option", name="Latent diffusion: captioned shapes (embedded)").click()
        page.locator("#lab-prompt textarea").fill("a large yellow star on a black background")
        page.get_by_role("button", name="Run the reverse process").click()
        wait_for_text(page, "lab-status", "Done", 300)
        page.get_by_role("tab", name="Cross-attention").click()
        wait_for_text(page, "attention-note", "Step 50 of 50", 300)
        page.wait_for_function("() => [...document.querySelectorAll('#attention-gallery img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=60_000)
        page.screenshot(path=str(out / "screenshot-attention.png"), full_page=True)
        saved.append(out / "screenshot-attention.png")
        page.get_by_role("tab", name="Reverse process").click()
        # the playground: train the default budget on two moons, then sample
        page.get_by_role("tab", name="Playground: train on points").click()
        page.locator("#pg-train").click()
        wait_for_text(page, "pg-status", "Trained", 300)
        page.locator("#pg-sample").click()
        wait_for_text(page, "pg-sample-status", "Sampled", 300)
        page.wait_for_function("() => document.querySelector('#pg-animation img')?.complete", timeout=60_000)
        page.screenshot(path=str(out / "screenshot-playground.png"), full_page=True)
        saved.append(out / "screenshot-playground.png")
        # the planner: the pillars room, 16 plans from corner to corner, then one step of one plan
        page.get_by_role("tab", name="Planner: paths in a maze").click()
        page.locator("#plan-layout input").click()
        page.get_by_role("option", name="Open room with pillars").click()
        page.wait_for_function("() => document.querySelector('#plan-gx input').value == '7.5'", timeout=60_000)
        plans = page.locator("#plan-count input[type=number]")
        plans.fill("16")
        plans.press("Enter")
        page.locator("#plan-go").click()
        wait_for_text(page, "plan-status", "plans clear", 300)
        step = page.locator("#plan-step input[type=number]")
        step.fill("10")
        step.press("Enter")
        wait_for_image(page, "plan-step-image", timeout_s=60)
        page.screenshot(path=str(out / "screenshot-planner.png"), full_page=True)
        saved.append(out / "screenshot-planner.png")
        page.get_by_role("tab", name="Text to image (latent)").click()
        page.get_by_role("button", name="Generate").click()
        wait_for_text(page, "text-status", "UNet calls", 300)
        wait_for_text(page, "text-status", "Step 25/25", 300)
        page.screenshot(path=str(out / "screenshot-text.png"), full_page=True)
        saved.append(out / "screenshot-text.png")
    return saved


def lesson_screenshots(url: str, out: Path) -> list[Path]:
    """One full-page screenshot per lesson in presenter mode at 1280 px wide, after its Show me (revealed)."""
    from demo.lessons import LESSONS

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with browser_page(url + "?presenter=1", width=1280, height=720) as page:
        for number, lesson in enumerate(LESSONS, start=1):
            page.goto(f"{url}?presenter=1&lesson={number}")
            page.wait_for_selector(f"#lesson-{number}-show", state="visible", timeout=60_000)
            page.wait_for_timeout(1500)  # the page's own load events (the lesson from the link) settle first
            page.locator(f"#lesson-{number}-show").click()
            if lesson.predict is not None:
                page.wait_for_selector(f"#lesson-{number}-predict", state="visible", timeout=60_000)
                page.locator(f"#lesson-{number}-reveal-result").click()
            wait_for_image(page, f"lesson-{number}-view", timeout_s=600)
            page.wait_for_function(f"() => ![...document.querySelectorAll('#lesson-{number} .progress-text, "
                                   f"#lesson-{number} .eta-bar')].some(e => e.offsetParent !== null)", timeout=600_000)
            page.wait_for_function(f"() => [...document.querySelectorAll('#lesson-{number} img')]"
                                   ".every(img => img.complete)", timeout=60_000)
            path = out / f"screenshot-lesson-{number}.png"
            page.screenshot(path=str(path), full_page=True)
            saved.append(path)
    return saved


def main() -> None:
    import socket

    from demo.app import CSS, build_app
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("assets"))
    p.add_argument("--lessons", action="store_true", help="each lesson in presenter mode instead of each tab")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(Studio(Registry.default(), device="cpu"))
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        for path in (lesson_screenshots if args.lessons else screenshots)(f"http://127.0.0.1:{port}/", args.out):
            logging.info("saved %s", path)
    finally:
        app.close()


if __name__ == "__main__":
    main()
