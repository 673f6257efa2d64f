"""The lessons in a real headless Chromium: links, live views and answers, readability at 1280x720 (plain and
presenter), and the handout opened offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.lessons import LESSONS
from tests.browser import (
    CHROMIUM_ARGS,
    LOW_CONTRAST,
    browser_marks,
    browser_page,
    chromium_path,
    wait_for_image,
    wait_for_text,
)

pytest.importorskip("playwright")
pytestmark = browser_marks()  # a browser against the app


@pytest.mark.slow
def test_lessons_open_from_a_link_show_live_views_and_reveal_answers(url: str) -> None:
    with browser_page(url + "?lesson=4") as page:
        page.wait_for_selector("#lesson-4-show", state="visible", timeout=60_000)  # the link opened lesson 4
        assert not page.locator("#lesson-1-show").is_visible()
        page.locator("#lesson-4-show").click()
        wait_for_text(page, "lesson-4", "done")  # the race table
        grid = wait_for_image(page, "lesson-4-view")
        assert grid["ok"] and grid["max"] > grid["min"]
        page.locator("#lesson-4-reveal").click()
        wait_for_text(page, "lesson-4-answer", "discretisation error")
        page.locator("#lesson-4 button", has_text="Next →").click()
        try:
            page.wait_for_selector("#lesson-5-show", state="visible", timeout=30_000)
        finally:
            page.screenshot(path="/tmp/browser-lessons-next.png", full_page=True)
        page.locator("#lesson-5-show").click()
        wait_for_text(page, "lesson-5", "identical, byte for byte")


@pytest.mark.slow
def test_a_lesson_opens_the_playground(url: str) -> None:
    with browser_page(url + "?lesson=2") as page:
        page.wait_for_selector("#lesson-2-playground", state="visible", timeout=60_000)
        page.locator("#lesson-2-playground").click()
        page.wait_for_selector("#pg-train", state="visible", timeout=30_000)
        # the view the button names is open: its own button shows, and its tab is the selected one
        page.get_by_role("button", name="Measure the loss at 20 values of t (fresh data)").wait_for(
            state="visible", timeout=30_000)
        assert page.locator("#pg-views [role=tab][aria-selected=true]").inner_text().strip() == "Loss against t"



BODY_TEXT_PX = """() => {
    const p = [...document.querySelectorAll('#lessons .prose p')].find(e => e.offsetParent !== null);
    return parseFloat(getComputedStyle(p).fontSize);
}"""


# No CSS transition or finite animation running (a colour mid-transition is neither the old nor the new one).
SETTLED = ("() => document.getAnimations().every(a => a.playState !== 'running' "
           "|| a.effect?.getTiming().iterations === Infinity)")
# Whether a visible element inside #id invites an upload (Gradio's empty input: "Drop Media Here - or - Click to
# Upload"): an output must not.
UPLOAD_HINT = """(id) => [...document.querySelectorAll(`#${id} *`)].some(e => e.offsetParent !== null
    && [...e.childNodes].some(n => n.nodeType === 3 && /Drop .* Here|Click to Upload/i.test(n.textContent)))"""
TABS = ("Lessons", "DDPM sampling", "Step lab", "Playground: train on points", "Planner: paths in a maze",
        "Text to image (latent)")


@pytest.mark.slow
@pytest.mark.parametrize("presenter", [False, True], ids=["plain", "presenter"])
def test_every_text_is_readable_and_the_first_screen_holds_the_work(url: str, presenter: bool) -> None:
    """At 1280x720: every text of every lesson and tab at least WCAG AA contrast (4.5:1, computed styles); in
    presenter mode each lesson starts within 150 px of the top; the text tab's Generate and its images fit the
    first screen; the stepper names every lesson (plain mode); gallery captions as large as body text, whole."""
    query = "?presenter=1" if presenter else ""
    with browser_page(url + query, width=1280, height=720) as page:
        if presenter:
            page.wait_for_function("() => document.body.classList.contains('presenter')", timeout=60_000)
        else:
            names = page.evaluate("() => [...document.querySelectorAll('#lessons .step-label')].map(e => "
                                  "[e.innerText, e.getBoundingClientRect().width, parseFloat(getComputedStyle(e).fontSize)])")
            assert [n[0] for n in names] == [f"{k}. {lesson.short}" for k, lesson in enumerate(LESSONS, start=1)], names
            assert all(width > 0 and size >= 14 for _, width, size in names), names
        for number in range(1, 11):
            lesson = page.locator(f"#lesson-{number}")
            lesson.locator(".prose.lesson-text").wait_for(state="visible", timeout=30_000)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.wait_for_function(SETTLED)  # colours mid-transition
            assert page.evaluate(LOW_CONTRAST) == [], f"lesson {number}"
            assert not page.evaluate(UPLOAD_HINT, f"lesson-{number}"), f"lesson {number}: an output offers an upload"
            if presenter:
                top = lesson.locator(".prose.lesson-text").bounding_box()["y"]
                assert top <= 150, f"lesson {number} starts {top:.0f} px down"
            if number < 10:
                lesson.get_by_role("button", name="Next →").click()
        for tab in TABS:
            page.get_by_role("tab", name=tab).first.click()
            page.wait_for_timeout(500)
            page.wait_for_function(SETTLED)
            assert page.evaluate(LOW_CONTRAST) == [], tab
        page.evaluate("() => window.scrollTo(0, 0)")
        generate = page.locator("#text-generate").bounding_box()
        grid = page.locator("#text-grid").bounding_box()
        assert generate["y"] + generate["height"] <= 720 and grid["y"] + 0.5 * grid["height"] <= 720, (generate, grid)
        # a lesson's gallery: captions at body size, not cut off
        page.get_by_role("tab", name="Lessons").first.click()
        page.goto(url + ("?presenter=1&" if presenter else "?") + "lesson=6")
        page.locator("#lesson-6-show").click()
        page.wait_for_selector("#lesson-6-view .caption-label", timeout=120_000)
        body = page.evaluate(BODY_TEXT_PX)
        captions = page.evaluate("() => [...document.querySelectorAll('#lesson-6-view .caption-label')].map(e => "
                                 "[parseFloat(getComputedStyle(e).fontSize), e.scrollWidth <= e.clientWidth + 1])")
        assert captions and all(size >= min(body, 18) and whole for size, whole in captions), (body, captions)
        assert page.evaluate("() => [...document.querySelectorAll('#lesson-6-view .grid-wrap')].every(e => "
                             "e.scrollHeight <= e.clientHeight + 1)")  # no inner scroll box cuts a picture off


@pytest.mark.slow
def test_presenter_mode_sets_type_for_a_projector(url: str) -> None:
    with browser_page(url, width=1280, height=720) as page:
        page.wait_for_selector("#lessons .prose p", timeout=60_000)
        normal = page.evaluate(BODY_TEXT_PX)
        page.locator("#presenter-toggle input").check()
        page.wait_for_function("() => document.body.classList.contains('presenter')", timeout=30_000)
        large = page.evaluate(BODY_TEXT_PX)
        assert large >= 18 > normal, (normal, large)
        page.screenshot(path="/tmp/browser-presenter.png")
        page.locator("#presenter-toggle input").uncheck()
        page.wait_for_function("() => !document.body.classList.contains('presenter')", timeout=30_000)
        assert page.evaluate(BODY_TEXT_PX) == normal
    with browser_page(url + "?presenter=1", width=1280, height=720) as page:  # a link opens it in presenter mode
        page.wait_for_function("() => document.body.classList.contains('presenter')", timeout=60_000)
        assert page.evaluate(BODY_TEXT_PX) >= 18
        assert page.locator("#presenter-toggle input").is_checked()


@pytest.mark.slow
def test_every_lesson_shows_its_live_view_and_the_handout_keeps_them(url: str, tmp_path: Path) -> None:
    with browser_page(url) as page:
        for number in range(1, 11):
            page.wait_for_selector(f"#lesson-{number}-show", state="visible", timeout=60_000)
            page.locator(f"#lesson-{number}-show").click()
            if LESSONS[number - 1].predict is not None:  # predict, then reveal: the result shows on a click
                page.wait_for_selector(f"#lesson-{number}-predict", state="visible", timeout=30_000)
                assert not page.locator(f"#lesson-{number}-result").is_visible()
                page.locator(f"#lesson-{number}-reveal-result").click()
            try:
                view = wait_for_image(page, f"lesson-{number}-view")
            finally:
                page.screenshot(path=f"/tmp/browser-lesson-{number}.png", full_page=True)  # for a failure's diagnosis
            assert view["ok"] and view["max"] > view["min"], number  # a real picture, not a blank
            if number < 10:
                page.locator(f"#lesson-{number} button", has_text="Next →").click()
        page.locator("#lessons-handout").click()
        page.wait_for_selector("#lessons-handout-file a", timeout=60_000)
        href = page.locator("#lessons-handout-file a").first.get_attribute("href")
        text = page.request.get(href).text()
    assert text.startswith("<!DOCTYPE html>") and "Not shown in class" not in text  # every lesson's pictures
    for number in range(1, 11):
        section = text.split(f'<section id="lesson-{number}">')[1].split("</section>")[0]
        assert "data:image/png;base64," in section, number
    assert text.count('<figure class="wide plot">') >= 2  # lesson 1's and lesson 2's plots
    check_handout_offline(text, tmp_path)


def check_handout_offline(text: str, tmp_path: Path) -> None:
    """The handout opened from disk in Chromium with every network request refused: no TeX left in what a reader
    sees, every picture (figures and maths) decoded, tables drawn as tables, and it prints on a sane number of
    A4 pages."""
    from playwright.sync_api import sync_playwright

    path = tmp_path / "handout.html"
    path.write_text(text, encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            requested: list[str] = []
            page.route("**/*", lambda route: (requested.append(route.request.url),
                                              route.continue_() if route.request.url.startswith("file:") else route.abort()))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            visible = page.evaluate("() => document.body.innerText")
            assert "$$" not in visible and "\\frac" not in visible and "\\bar" not in visible and "$" not in visible
            images = page.evaluate("() => [...document.images].map(i => [i.className, i.complete && i.naturalWidth > 0])")
            assert images and all(ok for _, ok in images), [c for c, ok in images if not ok][:5]
            assert sum(c == "math" for c, _ in images) > 50
            assert page.locator("table").count() >= 1 and "|---|" not in visible
            assert all(url.startswith(("file:", "data:")) for url in requested), requested
            page.emulate_media(media="print")
            tallest = page.evaluate("() => Math.max(...[...document.querySelectorAll('figure')].map(f => f.offsetHeight))")
            assert tallest < 1000, tallest  # a figure fits on a printed page
            pdf = page.pdf(format="A4")
            pages = pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")
            assert 10 <= pages <= 40, pages  # one or more pages per lesson, no runaway gallery
        finally:
            browser.close()
