"""The app in a real headless Chromium: each tab's main action, the step slider, an error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser import (
    browser_marks,
    browser_page,
    colour_columns,
    image_pixels,
    wait_for_image,
    wait_for_new_text,
    wait_for_pixels,
    wait_for_text,
)
from tests.tiny import TINY_SD_SIDE

pytest.importorskip("playwright")
pytestmark = browser_marks()  # a browser against the app


@pytest.mark.slow
def test_sampling_tab_shows_a_real_grid(url: str, tmp_path: Path) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="DDPM sampling").click()
        page.get_by_role("button", name="Sample").click()
        wait_for_text(page, "ddpm-status", "Step 50/50")
        info = wait_for_image(page, "ddpm-grid")
        # 16 tiny 8x8 images: a 4x4 grid with 2-pixel padding, 4 * 10 + 2 = 42
        assert info["ok"] and (info["width"], info["height"]) == (42, 42)
        assert info["max"] > info["min"]  # not blank
        page.screenshot(path=str(tmp_path / "sampling.png"))


@pytest.mark.slow
def test_stop_ends_a_long_run_within_a_step(serve) -> None:
    _, client, studio = serve(queue_size=8)
    with browser_page(client.src) as page:
        page.get_by_role("tab", name="DDPM sampling").click()
        for elem_id, value in (("ddpm-steps", "100"), ("ddpm-batch", "64")):  # about 5 s on the tiny model
            box = page.locator(f"#{elem_id} input[type=number]")
            box.fill(value)
            box.press("Enter")
        before = studio.gate.steps_run
        page.get_by_role("button", name="Sample").click()
        wait_for_text(page, "ddpm-status", "UNet calls")
        page.get_by_role("button", name="Stop").click()
        time.sleep(1.0)  # the step in flight ends
        stopped = studio.gate.steps_run
        time.sleep(2.0)
        assert studio.gate.steps_run == stopped  # nothing ran after the Stop
        assert 0 < stopped - before < 100
        assert "Step 100/100" not in page.locator("#ddpm-status").inner_text()


def run_the_step_lab(page) -> None:  # noqa: ANN001 - a Playwright page
    """Open the step lab, run the reverse process with its defaults (50 steps) and wait for the last step."""
    page.get_by_role("tab", name="Step lab").click()
    page.get_by_role("button", name="Run the reverse process").click()
    wait_for_text(page, "lab-status", "Done")
    wait_for_text(page, "lab-equation", "Step 50 of 50")


@pytest.mark.slow
def test_step_slider_changes_the_shown_step(url: str) -> None:
    with browser_page(url) as page:
        run_the_step_lab(page)
        before = wait_for_image(page, "lab-x0")
        assert before["ok"] and (before["width"], before["height"]) == (8, 8)
        slider = page.locator("#lab-slider input[type=number]")
        slider.fill("3")
        slider.press("Enter")
        wait_for_text(page, "lab-equation", "Step 3 of 50")
        after = wait_for_image(page, "lab-x0", before["src"])
        assert after["src"] != before["src"]


@pytest.mark.slow
def test_a_recipe_upload_restores_the_step_lab_run(url: str, tmp_path: Path) -> None:
    import numpy as np
    from gradio_client import Client
    from PIL import Image

    # the teacher's run, as the API returns it: its predicted x0, decoded as the browser decodes it (RGBA)
    client = Client(url, verbose=False)
    _, _, _, x0, *_ = client.predict("ddpm-mnist", "ddpm", 50, 0, "", 1.0, 1, api_name="/lab_run")
    teacher = np.asarray(Image.open(x0).convert("RGBA")).ravel().tolist()
    client.close()
    with browser_page(url) as page:
        run_the_step_lab(page)  # the same run in the page: DDPM, 50 steps, seed 0
        wait_for_pixels(page, "lab-x0", teacher)
        page.get_by_text("Export: animation and recipe").click()
        page.get_by_role("button", name="Recipe (JSON)").click()
        page.wait_for_selector("#lab-download a", timeout=60_000)
        href = page.locator("#lab-download a").first.get_attribute("href")
        recipe = tmp_path / "recipe.json"
        recipe.write_bytes(page.request.get(href).body())
        assert '"seed": 0' in recipe.read_text()
        seed = page.locator("#lab-seed input")  # a student's own run
        seed.fill("5")
        seed.press("Tab")  # leave the box: the app has the new seed before Run is pressed
        page.wait_for_function("() => document.querySelector('#lab-seed input').value === '5'", timeout=30_000)
        done = page.locator("#lab-status").inner_text()
        page.get_by_role("button", name="Run the reverse process").click()
        wait_for_new_text(page, "lab-status", done, "Done")
        wait_for_pixels(page, "lab-x0", teacher, equal=False)  # the student's own digit
        page.locator("#lab-recipe-upload input[type=file]").set_input_files(str(recipe))
        # the note heads the replay's statuses (it once lasted only until the first step's status: CI missed it)
        wait_for_text(page, "lab-status", "Recipe loaded: ddpm-mnist, ddpm, 50 steps, seed 0")
        wait_for_text(page, "lab-status", "Done")
        assert page.locator("#lab-seed input").input_value() == "0"
        wait_for_pixels(page, "lab-x0", teacher)  # the teacher's picture, byte for byte


@pytest.mark.slow
def test_a_shared_link_opens_the_step_lab_at_the_teachers_pixels(url: str) -> None:
    """The teacher's Share link (a ?run= parameter): a student's fresh page opens the step lab, replays the run and
    shows the teacher's predicted x0 byte for byte; the link pasted into an open page does the same; a damaged link
    says so and runs nothing; a page without a link queues nothing (a regression: a load event on every page took
    a queue place and put Gradio's error badge on the step lab's controls)."""
    requests: list[str] = []
    with browser_page(url, requests=requests) as page:  # the teacher
        page.wait_for_timeout(3000)  # the load events have run
        assert not [r for r in requests if "/queue/" in r], requests  # (the ?lesson= link is read unqueued)
        assert page.locator(".toast-body").count() == 0
        page.get_by_role("tab", name="Step lab").click()
        seed = page.locator("#lab-seed input")
        seed.fill("3")  # not the page's default
        seed.press("Tab")
        page.wait_for_timeout(1000)  # the box's value reaches the app (the run reads it from there)
        run_the_step_lab(page)
        assert page.locator(".toast-body").count() == 0
        page.wait_for_timeout(1000)  # the final picture, not a streamed preview
        teacher = image_pixels(page, "lab-x0")
        page.get_by_text("Export: animation and recipe").click()
        page.get_by_role("button", name="Share link").click()
        page.wait_for_function("() => document.querySelector('#lab-share-link textarea, #lab-share-link input')"
                               "?.value.includes('?run=')", timeout=30_000)
        link = page.locator("#lab-share-link textarea, #lab-share-link input").first.input_value()
    assert link.startswith(url.rstrip("/")) and len(link) < len(url) + 400
    with browser_page(link) as page:  # a student's laptop
        wait_for_text(page, "lab-status", "Shared run: ddpm-mnist, ddpm, 50 steps, seed 3")
        wait_for_text(page, "lab-status", "Done")
        assert page.locator("#lab-seed input").input_value() == "3"
        wait_for_pixels(page, "lab-x0", teacher)
        assert page.locator("#shared-run").is_hidden()
    with browser_page(url) as page:  # a student who already has the app open pastes the link
        page.get_by_role("tab", name="Step lab").click()
        page.get_by_text("Export: animation and recipe").click()
        page.locator("#lab-paste-link textarea, #lab-paste-link input").first.fill(link)
        page.locator("#lab-paste-open").click()
        wait_for_text(page, "lab-status", "Shared run: ddpm-mnist, ddpm, 50 steps, seed 3")
        wait_for_text(page, "lab-status", "Done")
        wait_for_pixels(page, "lab-x0", teacher)
    with browser_page(link[:-10]) as page:  # cut short
        page.wait_for_selector("text=/link parameter is damaged/", timeout=60_000)


@pytest.mark.slow
def test_cross_attention_tab_shows_one_map_per_token(url: str) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="Step lab").click()
        page.locator("#lab-model input").click()
        page.get_by_role("option", name="Latent diffusion: captioned shapes (embedded)").click()
        page.locator("#lab-prompt textarea").fill("a red circle")
        page.get_by_role("button", name="Run the reverse process").click()
        wait_for_text(page, "lab-status", "Done")
        page.get_by_role("tab", name="Cross-attention").click()
        wait_for_text(page, "attention-note", "Step 50 of 50")
        # start, three words, end and padding: six overlays of the image, at the tiny stand-in's own resolution
        page.wait_for_function("() => document.querySelectorAll('#attention-gallery img').length === 6",
                               timeout=60_000)
        captions = page.locator("#attention-gallery").inner_text()
        assert "circle" in captions and "padding" in captions
        info = wait_for_image(page, "attention-gallery")
        assert info["ok"] and (info["width"], info["height"]) == (TINY_SD_SIDE, TINY_SD_SIDE) and info["max"] > info["min"]


@pytest.mark.slow
def test_text_tab_generates_and_an_error_is_shown(url: str) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="Text to image (latent)").click()
        page.get_by_role("button", name="Generate").click()
        wait_for_text(page, "text-status", "Step 25/25")
        info = wait_for_image(page, "text-grid")
        assert info["ok"] and info["max"] > info["min"]
        # an error case: a prompt over the server's limit
        page.locator("#text-prompt textarea").fill("red " * 600)
        page.get_by_role("button", name="Generate").click()
        try:
            page.wait_for_selector("text=/limited to 2000 characters/", timeout=60_000)
        finally:
            page.screenshot(path="/tmp/browser-text-error.png")


@pytest.mark.slow
def test_text_tab_draws_the_planned_layout_boxes(url: str) -> None:
    """A two-object prompt: the planned layout is drawn beside the images, the first object's box (Okabe-Ito
    orange) left of the second's (sky blue) for "left of"; a prompt the planner cannot read says why."""
    with browser_page(url) as page:
        page.get_by_role("tab", name="Text to image (latent)").click()
        page.locator("#text-prompt textarea").fill("a red circle left of a blue square")
        page.get_by_role("button", name="Generate").click()
        wait_for_text(page, "text-status", "drawn by a planned layout")
        wait_for_text(page, "text-status", "Step 25/25")
        wait_for_image(page, "text-layout-plot")
        width = page.evaluate("() => document.querySelector('#text-layout-plot img').naturalWidth")
        columns = colour_columns(page, "text-layout-plot", {"orange": (0xE6, 0x9F, 0x00), "blue": (0x56, 0xB4, 0xE9)})
        assert len(columns["orange"]) > 500 and len(columns["blue"]) > 500, {k: len(v) for k, v in columns.items()}
        first_panel = {k: [x for x in v if x < width / 4] for k, v in columns.items()}  # four images, four panels
        assert sum(first_panel["orange"]) / len(first_panel["orange"]) < \
            sum(first_panel["blue"]) / len(first_panel["blue"])
        page.locator("#text-prompt textarea").fill("a cat left of a dog")
        page.get_by_role("button", name="Generate").click()
        wait_for_text(page, "text-status", "cannot read 'a cat' or 'a dog'")


@pytest.mark.slow
def test_playground_trains_samples_and_animates(url: str, tmp_path: Path) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="Playground: train on points").click()
        steps = page.locator("#pg-steps input[type=number]")
        steps.fill("300")
        steps.press("Enter")
        page.locator("#pg-train").click()
        try:
            wait_for_text(page, "pg-status", "Trained 300 steps")
        finally:
            page.screenshot(path="/tmp/browser-playground-train.png", full_page=True)  # for a failure's diagnosis
        assert "the floor" in page.locator("#pg-status").inner_text()
        cloud = wait_for_image(page, "pg-cloud")
        assert cloud["ok"] and (cloud["width"], cloud["height"]) == (360, 360) and cloud["min"] < 100
        page.locator("#pg-sample").click()
        wait_for_text(page, "pg-sample-status", "Sampled 1000 particles")
        animation = wait_for_image(page, "pg-animation")
        assert animation["ok"] and animation["width"] == 360 and animation["min"] < 100
        assert page.evaluate("() => document.querySelector('#pg-animation img').src").endswith(".gif")
        frame = wait_for_image(page, "pg-frame-image")
        slider = page.locator("#pg-frame input[type=number]")
        slider.fill("0")
        slider.press("Enter")
        first = wait_for_image(page, "pg-frame-image", frame["src"])  # the starting noise
        assert first["src"] != frame["src"]
        page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


@pytest.mark.slow
def test_playground_trains_on_a_drawing_made_with_the_mouse(url: str) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="Playground: train on points").click()
        page.locator("#pg-data input").click()
        page.get_by_role("option", name="Your drawing").click()
        page.get_by_text("Your drawing (the drawing data set)").click()
        page.locator("#pg-drawing button[aria-label=Brush]").click()
        box = page.locator("#pg-drawing canvas").first.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
        page.mouse.move(x0, y0)
        page.mouse.down()
        for i in range(30):  # a zigzag
            page.mouse.move(x0 + i * box["width"] * 0.013, y0 + (i % 10) * box["height"] * 0.03, steps=2)
        page.mouse.up()
        steps = page.locator("#pg-steps input[type=number]")
        steps.fill("200")
        steps.press("Enter")
        page.locator("#pg-train").click()
        wait_for_text(page, "pg-status", "Trained 200 steps")
        cloud = wait_for_image(page, "pg-cloud")
        assert cloud["ok"] and cloud["min"] < 100



@pytest.mark.slow
def test_the_step_lab_works_from_the_keyboard(url: str) -> None:
    with browser_page(url) as page:
        run_the_step_lab(page)
        page.locator("#lab-status").click()  # focus the page, outside any text field
        page.keyboard.press("Home")
        wait_for_text(page, "lab-equation", "Step 1 of 50")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        wait_for_text(page, "lab-equation", "Step 3 of 50")
        page.keyboard.press("ArrowLeft")
        wait_for_text(page, "lab-equation", "Step 2 of 50")
        page.keyboard.press("End")
        wait_for_text(page, "lab-equation", "Step 50 of 50")
        for _ in range(3):
            page.keyboard.press("ArrowLeft")
        wait_for_text(page, "lab-equation", "Step 47 of 50")
        page.keyboard.press("Space")  # play: the steps advance on their own, to the last
        wait_for_text(page, "lab-equation", "Step 50 of 50", timeout_s=60)


@pytest.mark.slow
def test_planner_plans_between_two_clicks_on_the_maze(url: str) -> None:
    with browser_page(url) as page:
        page.get_by_role("tab", name="Planner: paths in a maze").click()
        maze = wait_for_image(page, "plan-maze")
        assert maze["ok"]
        # where the picture's pixels are on the page (the image is fitted into its box, as gradio reads clicks)
        left, top, scale = page.evaluate("""() => {
            const img = document.querySelector('#plan-maze img'); const b = img.getBoundingClientRect();
            const r = Math.min(b.width / img.naturalWidth, b.height / img.naturalHeight, 1);
            return [b.left + (b.width - img.naturalWidth * r) / 2, b.top + (b.height - img.naturalHeight * r) / 2, r];
        }""")

        def click_cell(x: float, y: float) -> None:  # cell units: 56 pixels a cell
            page.mouse.click(left + x * 56 * scale, top + y * 56 * scale)

        # the U-maze is 9 x 9 cells: the start in cell (row 1, column 6), then the goal in (row 7, column 2)
        def near(elem_id: str, value: float) -> str:  # a click lands within a pixel or two
            return f"() => Math.abs(parseFloat(document.querySelector('#{elem_id} input').value) - {value}) < 0.05"

        click_cell(6.5, 1.5)
        page.wait_for_function(near("plan-sx", 6.5), timeout=30_000)
        assert page.evaluate(near("plan-sy", 1.5))
        click_cell(2.5, 7.5)
        page.wait_for_function(near("plan-gx", 2.5), timeout=30_000)
        assert page.evaluate(near("plan-gy", 7.5))
        page.locator("#plan-go").click()
        try:
            wait_for_text(page, "plan-status", "plans clear")
        finally:
            page.screenshot(path="/tmp/browser-planner.png", full_page=True)  # for a failure's diagnosis
        result = wait_for_image(page, "plan-result")
        assert result["ok"] and result["min"] < 100
        assert page.evaluate("() => document.querySelector('#plan-animation img').src").endswith(".gif")
        assert page.locator("#plan-table").inner_text().count("yes") >= 8  # clear of walls, reaches the goal
        slider = page.locator("#plan-step input[type=number]")
        slider.fill("5")
        slider.press("Enter")
        step = wait_for_image(page, "plan-step-image")
        assert step["ok"] and step["width"] > 2 * maze["width"]
