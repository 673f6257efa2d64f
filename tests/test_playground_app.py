"""The playground's endpoints in the real app, driven through gradio_client."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from tests.helpers import settled_steps  # noqa: E402
from tests.helpers import load as picture  # noqa: E402

TRAIN = ("moons", "", None, "cosine", 100, 300, 0)  # dataset, word, drawing, schedule, T, steps, seed


@pytest.mark.slow
def test_every_playground_endpoint_works_in_order(served, tmp_path) -> None:
    _, client, _ = served
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/playground_train", "/playground_sample", "/playground_show", "/playground_forward",
            "/playground_field", "/playground_paths", "/playground_loss", "/playground_export",
            "/playground_animation", "/playground_recipe"} <= names
    status, loss, cloud, snapshots = client.predict(*TRAIN, api_name="/playground_train")
    assert "Trained** 300 steps" in status and "the floor" in status
    assert picture(cloud).shape == (360, 360, 3)
    assert [s["caption"].split(":")[0] for s in snapshots] == ["step 100", "step 300"]
    curve = np.array(loss["data"])  # (step, moving-average loss), thinned
    assert loss["columns"] == ["step", "loss"] and 10 < len(curve) <= 300 and curve[-1, 0] == 300
    assert curve[-1, 1] < curve[0, 1]
    gif, frame, _, _, sample_status = client.predict("ddim", 10, 200, 1, 0.0,
                                                                  api_name="/playground_sample")
    assert gif.endswith(".gif") and frame["maximum"] == 10 and "200 particles" in sample_status
    assert len(Image.open(gif).getdata()) and getattr(Image.open(gif), "n_frames", 1) > 5
    shown, caption = client.predict(3, api_name="/playground_show")
    assert picture(shown).shape == (360, 360, 3) and "before step 4 of 10" in caption
    strip, animation, text = client.predict(*TRAIN[:5], 0, api_name="/playground_forward")
    assert picture(strip).shape[1] > 5 * 240 and "Eq. 4" in text
    assert animation.endswith(".gif") and Image.open(animation).n_frames >= 40  # data to noise
    plot, note = client.predict(5, True, api_name="/playground_field")
    assert plot is not None and "score" in note
    assert client.predict(4, 0, 10, api_name="/playground_paths") is not None
    plot, note = client.predict(api_name="/playground_loss")
    assert "Hardest" in note
    archive = client.predict(api_name="/playground_export")
    with zipfile.ZipFile(archive) as z:
        assert "denoiser/diffusion_pytorch_model.safetensors" in z.namelist()
    assert client.predict("mp4", api_name="/playground_animation").endswith(".mp4")
    recipe = json.loads(Path(client.predict(api_name="/playground_recipe")).read_text())
    assert recipe["config"]["steps"] == 300 and recipe["config"]["num_train_timesteps"] == 100


@pytest.mark.parametrize("args, message", [
    (("word", "", None, "cosine", 100, 300, 0), "type a word"),
    (("word", "<script>", None, "cosine", 100, 300, 0), "simple punctuation"),
    (("drawing", "", None, "cosine", 100, 300, 0), "draw something"),
    (("moons", "", None, "cosine", 100, 30_000, 0), "Training steps|greater than maximum"),
    (("moons", "", None, "cosine", 7, 300, 0), "T \\(training timesteps\\)|not in the list of choices"),
    (("moons", "", None, "quadratic", 100, 300, 0), "schedule must be|not in the list of choices"),
])
def test_bad_training_input_gets_a_clear_message(served, args, message) -> None:
    _, client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*args, api_name="/playground_train")


def test_views_before_training_say_what_to_do(serve) -> None:
    _, client, _ = serve(queue_size=8)  # a fresh session: nothing trained
    for api_name, args in (("/playground_sample", ("ddim", 10, 100, 0, 0.0)), ("/playground_field", (5, False)),
                           ("/playground_loss", ()), ("/playground_export", ())):
        with pytest.raises(gradio_client.exceptions.AppError, match="Train a model first"):
            client.predict(*args, api_name=api_name)


def sketch(path: Path, side: int = 256) -> Path:
    """A white canvas with a black ring, as the sketchpad's composite would send it."""
    from PIL import ImageDraw

    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).ellipse((40, 40, side - 40, side - 40), outline="black", width=10)
    image.save(path)
    return path


@pytest.mark.slow
def test_a_drawing_trains_into_its_own_shape(served, tmp_path) -> None:
    from gradio_client import handle_file

    _, client, _ = served
    drawing = {"background": None, "layers": [], "composite": handle_file(str(sketch(tmp_path / "ring.png")))}
    status, _, cloud, _ = client.predict("drawing", "", drawing, "cosine", 100, 200, 0, api_name="/playground_train")
    assert "Trained** 200 steps" in status
    recipe = json.loads(Path(client.predict(api_name="/playground_recipe")).read_text())
    assert recipe["config"]["dataset"] == "drawing" and recipe["config"]["drawing"].startswith("128,128,")
    strip, _, _ = client.predict("drawing", "", drawing, "cosine", 100, 0, api_name="/playground_forward")
    first = picture(strip)[:, :240]  # t = 0: the ring itself, an empty centre
    blue = first[..., 2].astype(int) - first[..., 0] > 60  # the particles
    rows, cols = np.nonzero(blue)
    centre = np.hypot(rows - 120, cols - 120)
    assert len(rows) > 500 and np.percentile(centre, 5) > 25  # points on a ring, none at its centre


def test_a_pixel_bomb_posted_as_a_drawing_is_refused(served, tmp_path) -> None:
    from gradio_client import handle_file

    from tests.helpers import bomb_png

    _, client, _ = served
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(12000))
    drawing = {"background": None, "layers": [], "composite": handle_file(str(path))}
    with pytest.raises(gradio_client.exceptions.AppError, match="Drawing refused: the image is 12000x12000 pixels"):
        client.predict("drawing", "", drawing, "cosine", 100, 200, 0, api_name="/playground_train")


@pytest.mark.slow
def test_a_cancelled_training_stops_within_a_chunk_and_the_app_keeps_serving(served) -> None:
    import time

    _, client, studio = served
    before = studio.gate.steps_run
    job = client.submit("moons", "", None, "cosine", 1000, 20_000, 0, api_name="/playground_train")
    deadline = time.monotonic() + 60
    while studio.gate.steps_run < before + 5 and time.monotonic() < deadline:
        time.sleep(0.1)  # training runs: a gate step is a chunk of 25 optimiser steps
    assert studio.gate.steps_run >= before + 5
    job.cancel()
    settled = settled_steps(studio)
    time.sleep(2)
    assert studio.gate.steps_run == settled  # nothing ran after the cancel
    assert settled - before < 20_000 // 25  # it did not run to the end
    status, *_ = client.predict(*TRAIN, api_name="/playground_train")
    assert "Trained** 300 steps" in status
