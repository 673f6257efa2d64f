"""The real app, started in-process and driven through gradio_client (tiny models)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import load

gradio_client = pytest.importorskip("gradio_client")




def test_api_lists_every_model_event(served) -> None:
    _, client, _ = served
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/sample", "/lab_run", "/lab_show", "/text_to_image"} <= names


def test_sample_endpoint_gives_a_grid_of_the_right_size_and_is_reproducible(served) -> None:
    _, client, studio = served
    grid, status = client.predict("ddpm-mnist", "ddim", 2, 0.0, 4, 123, api_name="/sample")
    first = load(grid)
    # 4 images of 8x8 tile a 2x2 grid with 2-pixel padding: 2 * (8 + 2) + 2 = 22
    assert first.shape[:2] == (22, 22)
    assert "Step 2/2" in status and "4 images" in status
    again = load(client.predict("ddpm-mnist", "ddim", 2, 0.0, 4, 123, api_name="/sample")[0])
    np.testing.assert_array_equal(first, again)
    other = load(client.predict("ddpm-mnist", "ddim", 2, 0.0, 4, 124, api_name="/sample")[0])
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("args, message", [
    (("ddpm-mnist", "ddim", 0, 0.0, 4, 1), "Steps|less than minimum value 1"),
    (("ddpm-mnist", "ddim", 2, 0.0, 65, 1), "Batch|greater than maximum value 64"),
    (("ddpm-mnist", "ddim", 2, 0.0, 4, -1), "Seed|less than minimum value 0"),
    (("ddpm-mnist", "ddim", 2.5, 0.0, 4, 1), "Steps must be a whole number"),
    (("ddpm-mnist", "ddim", 2, 0.0, 4, 2**32), "Seed must be a whole number"),
    (("ddpm-mnist", "nope", 2, 0.0, 4, 1), "not in the list of choices"),
    (("no-such-model", "ddim", 2, 0.0, 4, 1), "not in the list of choices"),
])
def test_sample_endpoint_rejects_bad_input_with_a_clear_message(served, args, message) -> None:
    _, client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*args, api_name="/sample")


@pytest.mark.slow
def test_steps_endpoints_record_and_show_each_step(served) -> None:
    _, client, _ = served
    slider, x_t, noise, x0, latents, plot, equation, update, status = client.predict(
        "ddpm-mnist", "ddpm", 3, 5, "", 1.0, api_name="/lab_run")
    assert latents is None  # pixel models have no latent view
    assert load(update).ndim == 3  # the DDPM update as four labelled pictures
    assert "3 steps" in status and "Step 3 of 3" in equation
    assert load(x_t).shape[:2] == load(x0).shape[:2] == (8, 8)
    # four seeds side by side: each panel is a 2x2 grid of 8x8 images
    _, x_t, _, x0, *_ = client.predict("ddpm-mnist", "ddim", 2, 5, "", 1.0, 4, api_name="/lab_run")
    assert load(x_t).shape[:2] == load(x0).shape[:2] == (22, 22)
    with pytest.raises(Exception, match="greater than maximum value 16"):
        client.predict("ddpm-mnist", "ddim", 2, 5, "", 1.0, 17, api_name="/lab_run")


def test_text_endpoint_with_a_local_latent_model(served) -> None:
    _, client, _ = served
    grid, tokens, status, _ = client.predict("local/tiny-sd", "a red zebra circle", "", 4.0, "ddim", 2, 0, 2,
                                          api_name="/text_to_image")
    assert load(grid).shape == (2 + 16 + 2, 2 * (16 + 2) + 2, 3)
    assert "zebra" in status
    labels = {d["token"].strip(): d["class_or_confidence"] for d in tokens}
    assert labels["[UNK]"] == "unknown"


def test_a_text_models_batch_is_bounded_by_the_studio_itself(studio) -> None:
    """The text tab's batch of 16 is the Studio's bound, not only its slider's: a caller of the door (the API, a
    Ray replica) cannot ask a text model for 64 images; a pixel model allows its own 64, and the CLI, which runs its
    own batches, lifts the text bound to that."""
    from diffusion.studio import MAX_BATCH, MAX_TEXT_BATCH, SampleRequest, Studio

    text = SampleRequest(sampler="ddim", steps=2, n=MAX_TEXT_BATCH + 1, prompt="a red circle")
    with pytest.raises(ValueError, match=f"Batch must be a whole number between 1 and {MAX_TEXT_BATCH}"):
        studio.prepare("local/tiny-sd", text)
    assert studio.prepare("local/tiny-sd", dataclasses.replace(text, n=MAX_TEXT_BATCH)).request.n == MAX_TEXT_BATCH
    assert studio.prepare("local/tiny-ddpm", SampleRequest(sampler="ddim", steps=2, n=MAX_BATCH)).request.n == MAX_BATCH
    cli = Studio(studio.registry, device="cpu", precision="fp32", cache_bytes=0, max_text_batch=MAX_BATCH)
    assert cli.prepare("local/tiny-sd", dataclasses.replace(text, n=MAX_BATCH)).request.n == MAX_BATCH


def test_hub_model_offline_fails_fast_with_remedies(served) -> None:
    _, client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match="not available offline"):
        client.predict("stabilityai/sd-turbo", "a cat", "", 0.0, "euler-a", 1, 0, 1, api_name="/text_to_image")


@pytest.mark.slow
def test_step_lab_endpoints_guidance_export_and_recipe(served, tmp_path) -> None:
    import json

    from gradio_client import handle_file

    _, client, studio = served
    *_, latents, plot, equation, update, status = client.predict("local/tiny-sd", "ddim", 3, 7, "a red circle", 3.0,
                                                                 api_name="/lab_run")
    assert "DDIM (Song et al. 2021, Eq. 12)" in equation
    assert load(latents).shape == (8, 4 * 9 - 1)  # the 4 latent channels side by side
    uncond, text, direction, gallery, note = client.predict(2, api_name="/lab_guidance")
    assert load(direction).shape == (8, 8, 3) and len(gallery) == 6 and "w = 3" in note
    # cross-attention per token: start, 3 words, end, padding; one overlay each at the image size
    att_gallery, layers, att_note = client.predict(2, "4x4", api_name="/lab_attention")
    labels = [item["caption"] for item in att_gallery]
    assert [label.split(" · ")[0] for label in labels] == ["[BOS]", "a", "red", "circle", "[EOS]", "padding"]
    assert load(att_gallery[0]["image"]).shape == (16, 16, 3) and "Step 2 of 3" in att_note and layers["value"] == "4x4"
    # a two-object prompt is drawn by layout: the layout view shows each region, the attention view says why it has none
    client.predict("local/tiny-sd", "ddim", 3, 7, "a red circle left of a blue square", 3.0, 1, "auto", api_name="/lab_run")
    layout_gallery, layout_note = client.predict(2, api_name="/lab_layout")
    assert len(layout_gallery) == 5 and "Step 2 of 3" in layout_note
    assert [item["caption"].split(":")[0] for item in layout_gallery[:4]] == ["object 1", "object 1", "object 2", "object 2"]
    assert "drew the prompt by layout" in client.predict(2, "all", api_name="/lab_attention")[2]
    client.predict("local/tiny-sd", "ddim", 3, 7, "a red circle", 3.0, api_name="/lab_run")
    gif = client.predict("triptych", "gif", api_name="/lab_export")
    frames = np.asarray(Image.open(gif))
    assert frames.shape[0] == 192 and Image.open(gif).n_frames == 3
    recipe = json.loads(Path(client.predict(api_name="/lab_recipe")).read_text())
    assert recipe["model"] == "local/tiny-sd" and recipe["request"]["seed"] == 7
    # the forward lab and SDEdit on an uploaded image
    path = tmp_path / "in.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path)
    x0, x_t, latents, text_md = client.predict("ddpm-mnist", handle_file(str(path)), 50, 0, api_name="/forward_show")
    assert load(x_t).shape == (8, 8) and "x_0" in text_md
    result, sd_status = client.predict("ddpm-mnist", handle_file(str(path)), 50, "ddim", 10, 0, "", 1.0,
                                       api_name="/forward_denoise")
    assert load(result).shape == (22, 22) and "SDEdit from $t = 50$" in sd_status
    plot, strip = client.predict("ddpm-mnist", 50, handle_file(str(path)), 0, api_name="/schedules_show")
    assert load(strip).shape == (12, 6 * 10 + 2)
    # before any upload the strip shows an example digit (it stayed empty before)
    _, example = client.predict("ddpm-mnist", 50, None, 0, api_name="/schedules_show")
    assert load(example).shape == (12, 6 * 10 + 2) and load(example)[2:10, 2:10].std() > 0


@pytest.mark.slow
def test_an_uploaded_recipe_sets_the_controls_to_replay_the_run_exactly(served, tmp_path) -> None:
    from gradio_client import handle_file

    _, client, _ = served
    _, x_t, _, x0, *_ = client.predict("ddpm-mnist", "ddim", 4, 11, "", 1.0, 2, api_name="/lab_run")
    recipe = client.predict(api_name="/lab_recipe")
    client.predict("ddpm-mnist", "ddpm", 6, 3, "", 1.0, 1, api_name="/lab_run")  # the student's own run
    values = client.predict(handle_file(recipe), api_name="/lab_load_recipe")
    assert values[:8] == ("ddpm-mnist", "ddim", 4, 11, "", 1.0, 2, "auto") and "Recipe loaded" in values[8]
    _, again_x_t, _, again_x0, *_ = client.predict(*values[:8], api_name="/lab_run")
    assert np.array_equal(load(again_x0), load(x0)) and np.array_equal(load(again_x_t), load(x_t))
    bad = tmp_path / "bad.json"
    for text, message in (("{", "not valid JSON"), ('{"format": "x"}', "not a Diffusion Classroom recipe"),
                          (Path(recipe).read_text().replace('"ddpm-mnist"', '"no-such-model"'), "no-such-model")):
        bad.write_text(text)
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            client.predict(handle_file(str(bad)), api_name="/lab_load_recipe")
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(gradio_client.exceptions.AppError, match="UTF-8"):
        client.predict(handle_file(str(bad)), api_name="/lab_load_recipe")


@pytest.mark.slow
def test_a_shared_link_sets_the_controls_to_replay_the_run_exactly(served) -> None:
    """/lab_share gives the run's ?run= parameter; /lab_open_link reads it (or the whole link) back into the step
    lab's controls, which replay the run to the same pixels; a damaged link is one readable error."""
    _, client, _ = served
    _, x_t, _, x0, *_ = client.predict("ddpm-mnist", "ddim", 4, 12, "", 1.0, 2, api_name="/lab_run")
    token = client.predict(api_name="/lab_share")
    client.predict("ddpm-mnist", "ddpm", 6, 3, "", 1.0, 1, api_name="/lab_run")  # the student's own run
    values = client.predict(f"{client.src}?run={token}", api_name="/lab_open_link")
    assert values[:8] == ("ddpm-mnist", "ddim", 4, 12, "", 1.0, 2, "auto") and "Shared run" in values[8]
    _, again_x_t, _, again_x0, *_ = client.predict(*values[:8], api_name="/lab_run")
    assert np.array_equal(load(again_x0), load(x0)) and np.array_equal(load(again_x_t), load(x_t))
    with pytest.raises(gradio_client.exceptions.AppError, match="damaged"):
        client.predict(token[:-5], api_name="/lab_open_link")


def test_step_lab_needs_a_run_first(serve) -> None:
    _, client, _ = serve(queue_size=4)
    with pytest.raises(gradio_client.exceptions.AppError, match="Run the reverse process first"):
        client.predict("triptych", "gif", api_name="/lab_export")


@pytest.mark.slow
def test_sampler_race_endpoint_streams_to_a_full_grid(served) -> None:
    _, client, _ = served
    grid, table = client.predict("ddpm-mnist", 0, "", 1.0, api_name="/race")
    # 4 lanes x 8 noise levels of 8x8 tiles enlarged to 96 px, with row and column labels in the margins
    # (tiny model: DDPM runs its 100 timesteps)
    height, width, channels = load(grid).shape
    assert channels == 3 and 10 < height - 4 * 96 < 60 and 40 < width - 8 * 96 < 200
    assert table.count("| done |") == 4 and "| ddpm | 100 | 100 |" in table


def test_every_public_endpoint_is_named_after_its_handler(served) -> None:
    """One name per event: the API name, the handler's function name (gradio would number a clash)."""
    app, client, _ = served
    public = {name.lstrip("/") for name in client.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    assert {"sample", "text_to_image", "lab_run", "lab_show", "lab_attention", "lab_guidance", "lab_export",
            "lab_recipe", "forward_show", "forward_denoise", "race", "schedules_show", "random_seed"} <= public
    assert not [name for name in public if name[-1].isdigit()], public
    for block in app.fns.values():
        if block.api_name in public and block.fn is not None:
            assert block.fn.__name__ == block.api_name, (block.fn.__name__, block.api_name)


def test_the_api_page_explains_every_endpoint(served) -> None:
    """/gradio_api/info, as the "Use via API" page reads it: every named endpoint has a description and every
    parameter a name (no param_0 ... of a *args handler)."""
    import httpx

    app, client, _ = served
    info = httpx.get(f"{client.src.rstrip('/')}/gradio_api/info", timeout=30).json()
    endpoints = info["named_endpoints"]
    assert len(endpoints) >= 40
    undescribed = [name for name, ep in endpoints.items() if not ep.get("description", "").strip()]
    unnamed = {name: [p["parameter_name"] for p in ep["parameters"] if p["parameter_name"].startswith("param_")]
               for name, ep in endpoints.items()}
    assert undescribed == [] and not any(unnamed.values()), (undescribed, {k: v for k, v in unnamed.items() if v})
    assert [p["parameter_name"] for p in endpoints["/lessons_handout"]["parameters"]][:3] == [
        "lesson1_picture1", "lesson1_picture2", "lesson1_note1"]


@pytest.mark.slow
def test_the_footer_names_the_version_and_analytics_are_off(served) -> None:
    import subprocess
    import sys

    import httpx

    from diffusion import __version__

    _, client, _ = served
    page = httpx.get(client.src, timeout=30).text
    assert f"Diffusion Classroom {__version__}" in page
    # the app's entry point turns gradio's analytics off unless the deployer set them
    code = ("import os; os.environ.pop('GRADIO_ANALYTICS_ENABLED', None); import demo.launch, gradio.analytics as a; "
            "print(a.analytics_enabled())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
