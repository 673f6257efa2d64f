"""Hardening, round two: cancelled work stops, pixel bombs are refused before decoding, per-user
state is bounded across sessions, temporary files do not pile up, recipes and the CLI never crash."""

from __future__ import annotations

import base64
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from diffusion.budget import StateBudget
from diffusion.export import ExportDir
from diffusion.images import data_url_bytes, read_image
from diffusion.recipe import Recipe, make_recipe
from diffusion.request import SampleRequest
from diffusion.runtime import ComputeGate
from diffusion.sample import main, parse_args
from tests.conftest import settled_steps
from tests.load import app_server

GENERIC = "verbose error reporting"


def bomb_png(side: int) -> bytes:
    """A black 8-bit grayscale PNG of side x side pixels, built row by row (never held decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one zero byte per pixel
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----- 1. cancelled work stops -----
def test_compute_gate_runs_one_step_at_a_time_and_closes_what_it_wraps() -> None:
    gate = ComputeGate(1)
    closed = threading.Event()

    def slow(n: int):
        try:
            for i in range(n):
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    results: list[list[int]] = [[], []]

    def consume(k: int) -> None:
        for i in gate.steps(slow(20)):
            results[k].append(i)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [list(range(20))] * 2
    assert gate.peak == 1 and gate.active == 0 and gate.steps_run == 42  # 20 + 20 steps and two ends
    closed.clear()
    steps = gate.steps(slow(100))
    assert next(steps) == 0
    steps.close()  # a cancelled consumer: the wrapped generator is closed at once
    assert closed.is_set()


def test_streamed_stops_between_steps_on_cancel_and_thins_ticks() -> None:
    import asyncio

    from demo.common import STREAM_EVERY_S, Tick, streamed

    done: list[int] = []

    def steps(n: int, pause: float):
        for i in range(n):
            time.sleep(pause)  # one "denoising step"
            done.append(i)
            yield i if i == 0 or i == n - 1 else Tick(i)

    async def cancel_midway() -> tuple[int, int, int]:
        updates = streamed(steps)(200, 0.05)
        assert await updates.__anext__() == 0
        waiting = asyncio.ensure_future(updates.__anext__())
        await asyncio.sleep(0.6)  # a Tick or two arrive while a step runs
        if waiting.done():
            waiting = asyncio.ensure_future(updates.__anext__())
        at_cancel = len(done)
        waiting.cancel()  # what the queue does to a cancelled request
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.3)
        settled = len(done)
        await asyncio.sleep(0.5)
        return at_cancel, settled, len(done)

    at_cancel, settled, later = asyncio.run(cancel_midway())
    assert settled <= at_cancel + 1 and later == settled  # the step in flight, then nothing

    async def collect() -> list:
        return [u async for u in streamed(steps)(50, 0.0)]

    done.clear()
    sent = asyncio.run(collect())
    assert len(done) == 50 and sent[0] == 0 and sent[-1] == 49
    assert len(sent) <= 2 + 1 + int(0.05 * 50 / STREAM_EVERY_S)  # the ends and few Ticks, not 48

    def broken():
        yield 1
        raise gr.Error("a clear message")

    async def failing() -> list:
        return [u async for u in streamed(broken)()]

    with pytest.raises(gr.Error, match="a clear message"):
        asyncio.run(failing())


@pytest.fixture(scope="module")
def embedded(serve):
    """The app on the shipped models (assets/): real UNet costs, for the cancellation test."""
    return serve(queue_size=64, embedded=True)


def test_cancelled_jobs_stop_within_a_step_and_never_overlap(embedded) -> None:
    _, client, studio = embedded
    before = studio.gate.steps_run
    jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, seed, api_name="/sample") for seed in range(3)]
    deadline = time.monotonic() + 60
    while studio.gate.steps_run < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # the first job is running
    assert studio.gate.steps_run >= before + 3
    time.sleep(2)
    at_cancel = studio.gate.steps_run
    for job in jobs:
        job.cancel()
    # the step in flight may finish (one per cancelled job at most); then nothing more may run
    settled = settled_steps(studio)
    time.sleep(3)
    print(f"\ncancel (in process): {at_cancel - before} steps (batch 64) before the cancels, {settled - at_cancel} "
          f"after; {studio.gate.steps_run - settled} in the next 3 s; peak concurrent steps {studio.gate.peak}")
    assert settled - at_cancel <= len(jobs)  # at most the step in flight of each job
    assert studio.gate.steps_run == settled
    assert studio.gate.peak <= 1
    # the app keeps serving: a short request completes
    grid, status = client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 7, api_name="/sample")
    assert "Step 2/2" in status


def test_forty_cancelled_jobs_leave_the_server_idle(tmp_path: Path) -> None:
    """The cancellation probe against ``python app.py``: 40 x /sample (DDPM-1000, batch 64) from one client,
    cancelled after 4 s; the server process's CPU time over the next 5 s is under 10% of one core."""
    from gradio_client import Client

    with app_server(tmp_path, "--queue-size", "64") as (pid, url):
        client = Client(url, verbose=False)
        client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 0, api_name="/sample")  # the model is loaded
        idle0 = process_cpu_s(pid)
        time.sleep(5)
        idle = process_cpu_s(pid) - idle0
        jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, seed, api_name="/sample") for seed in range(40)]
        time.sleep(4)
        busy0 = process_cpu_s(pid)
        start = time.monotonic()
        for job in jobs:
            job.cancel()
        cancel_s = time.monotonic() - start
        time.sleep(1.0)  # the step in flight (about 0.5 s at batch 64) ends
        cpu0 = process_cpu_s(pid)
        time.sleep(5)
        cpu = process_cpu_s(pid) - cpu0
        print(f"\ncancel (app.py): idle server {idle / 5:.1%} of one core; 40 jobs cancelled in {cancel_s:.1f} s "
              f"({cpu0 - busy0:.1f} s CPU meanwhile, the step in flight included); then {cpu:.2f} s of CPU in 5 s "
              f"({cpu / 5:.1%} of one core)")
        assert cpu < 0.5  # under 10% of one core
        grid, status = client.predict("ddpm-mnist", "ddim", 2, 0.0, 1, 7, api_name="/sample")
        assert "Step 2/2" in status
        client.close()
        log = next(tmp_path.glob("app-*.log")).read_text()
        assert "Traceback" not in log and "KeyError" not in log  # a KeyError in /cancel was seen once


def test_a_request_admitted_beside_a_cancelled_one_never_runs_a_step_beside_it(embedded) -> None:
    _, client, studio = embedded
    studio.gate.peak = 0
    jobs = [client.submit("ddpm-mnist", "ddpm", 1000, 0.0, 64, 100 + i, api_name="/sample") for i in range(4)]
    time.sleep(3)
    for job in jobs[:-1]:
        job.cancel()
    time.sleep(3)
    jobs[-1].cancel()
    deadline = time.monotonic() + 30
    while studio.gate.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert studio.gate.peak == 1


# ----- 2. pixel bombs and broken images -----
def test_read_image_checks_bytes_then_pixels_before_decoding(tmp_path: Path) -> None:
    small = tmp_path / "ok.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(small)
    arr = read_image(small)
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8 and arr[0, 0].tolist() == [200, 10, 10]
    assert np.array_equal(read_image(small.read_bytes()), arr)
    bomb = bomb_png(12000)
    assert len(bomb) < 1024 * 1024
    peak_rss_reset()
    start = rss()
    with pytest.raises(ValueError, match="12000x12000 pixels; the limit is 16.8 megapixels"):
        read_image(bomb)
    assert peak_rss() - start < 50 * 2**20
    with pytest.raises(ValueError, match="larger than the 5 MB limit"):
        read_image(b"\x00" * (6 * 2**20))
    with pytest.raises(ValueError, match="not an image"):
        read_image(b"this is a text file named .png")
    with pytest.raises(ValueError, match="damaged or cut short"):
        read_image(small.read_bytes()[:60])
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    with pytest.raises(ValueError, match="not an image"):
        read_image(svg)


def test_data_urls_are_bounded_before_decoding() -> None:
    png = bomb_png(64)
    assert data_url_bytes("data:image/png;base64," + base64.b64encode(png).decode()) == png
    huge = "data:image/png;base64," + "A" * (8 * 2**20)
    with pytest.raises(ValueError, match="larger than the 5 MB limit"):
        data_url_bytes(huge)
    with pytest.raises(ValueError, match="base64"):
        data_url_bytes("data:image/png;base64,@@@@")
    with pytest.raises(ValueError, match="data: URL"):
        data_url_bytes("data:image/png,rawbytes")


@pytest.fixture(scope="module")
def served(serve):
    return serve(queue_size=8)


@pytest.mark.parametrize("side", [12000, 30000])
def test_pixel_bombs_sent_to_the_app_get_a_clear_error_and_little_memory(served, tmp_path: Path, side: int) -> None:
    _, client, _ = served
    path = tmp_path / f"bomb{side}.png"
    path.write_bytes(bomb_png(side))
    peak_rss_reset()
    start = rss()
    with pytest.raises(AppError, match="pixels; the limit is 16.8 megapixels") as info:
        client.predict("ddpm-mnist", handle_file(str(path)), 10, 0, api_name="/forward_show")
    extra = peak_rss() - start
    print(f"\n{side}x{side} bomb ({path.stat().st_size / 1024:.0f} KB): refused, extra peak RSS {extra / 2**20:.1f} MB")
    assert GENERIC not in str(info.value)
    assert extra < 200 * 2**20


def post_inline(client, image_url: str) -> str:
    """Call /forward_show over plain HTTP with the image inline as a data: URL; returns the outcome."""
    base = client.src.rstrip("/")
    payload = {"data": ["ddpm-mnist", {"url": image_url, "meta": {"_type": "gradio.FileData"}},
                        10, 0]}
    with httpx.Client(timeout=60) as http:
        event = http.post(f"{base}/gradio_api/call/forward_show", json=payload).json()["event_id"]
        return http.get(f"{base}/gradio_api/call/forward_show/{event}").text


def test_inline_images_meet_the_same_limits(served) -> None:
    _, client, _ = served
    big = "data:image/png;base64," + base64.b64encode(bomb_png(256) + b"\x00" * (20 * 2**20)).decode()
    assert "larger than the 5 MB limit" in post_inline(client, big)
    bomb = "data:image/png;base64," + base64.b64encode(bomb_png(12000)).decode()
    assert "12000x12000 pixels" in post_inline(client, bomb)
    buf = Image.new("L", (28, 28), 255)
    import io

    out = io.BytesIO()
    buf.save(out, format="PNG")
    ok = post_inline(client, "data:image/png;base64," + base64.b64encode(out.getvalue()).decode())
    assert "event: complete" in ok, ok


@pytest.mark.parametrize("content, message", [
    (b"hello, I am text", "not an image"),
    (None, "damaged or cut short"),  # a truncated PNG
])
def test_broken_uploads_are_named(served, tmp_path: Path, content, message) -> None:
    _, client, _ = served
    path = tmp_path / "upload.png"
    if content is None:
        Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
        content = path.read_bytes()[:70]
    path.write_bytes(content)
    with pytest.raises(AppError, match=message) as info:
        client.predict("ddpm-mnist", handle_file(str(path)), 10, 0, api_name="/forward_show")
    assert GENERIC not in str(info.value)


def test_a_normal_upload_still_works(served, tmp_path: Path) -> None:
    _, client, _ = served
    path = tmp_path / "digit.png"
    Image.new("RGB", (300, 200), (255, 255, 255)).save(path)
    x0, x_t, latents, text = client.predict("ddpm-mnist", handle_file(str(path)), 10, 0, api_name="/forward_show")
    assert np.asarray(Image.open(x0)).shape[:2] == (8, 8)
    assert "x_t" in text


# ----- 3. per-user state, bounded across sessions -----
class Held:
    def __init__(self):
        self.reason = None

    def release(self, reason: str) -> None:
        self.reason = reason


def test_state_budget_releases_the_oldest_and_the_expired() -> None:
    now = [0.0]
    budget = StateBudget(max_bytes=100, ttl_s=60, clock=lambda: now[0])
    items = [Held() for _ in range(5)]
    for i, item in enumerate(items):
        now[0] = i
        budget.admit(item, 30)
    assert [it.reason is None for it in items] == [False, False, True, True, True]  # 3 x 30 <= 100
    assert "newer runs" in items[0].reason and budget.total_bytes == 90
    huge = Held()
    budget.admit(huge, 500)  # the newest always stays, alone
    assert huge.reason is None and all(it.reason for it in items) and len(budget) == 1
    now[0] = 100
    assert budget.sweep() == 1 and huge.reason == "it expired" and budget.total_bytes == 0
    gone = Held()
    budget.admit(gone, 10)
    budget.discard(gone)
    assert gone.reason == "the session ended" and len(budget) == 0
    budget.discard(None)  # what the UI passes for a session that never ran


def process_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_fifty_api_sessions_stay_within_the_state_budget(tmp_path: Path) -> None:
    """``python app.py --state-mb 16`` and 50 scripted sessions (no heartbeat), each recording a 16-image,
    10-step run of a 64x64 RGB model (about 6 MB; 300 MB if every session kept its run). The server's
    RSS is read from /proc: between the 25th and the 50th session it grows far less than 25 runs."""
    import uuid

    from gradio_client import Client

    from tests.tiny import save_tiny_ddpm

    save_tiny_ddpm(tmp_path / "rgb64", channels=3, sample_size=64, attention=False)
    with app_server(tmp_path, "--model-dir", str(tmp_path / "rgb64"), "--state-mb", "16",
                    "--precision", "fp32") as (pid, url):
        client = Client(url, verbose=False)
        run = ("local/rgb64", "ddpm", 10, 0, "", 1.0, 16)
        client.predict(*run, api_name="/lab_run")  # warm: the model is loaded
        sessions = [uuid.uuid4().hex for _ in range(50)]
        sizes: dict[int, int] = {}
        for i, session in enumerate(sessions, start=1):
            client.session_hash = session  # a new API session: its own gr.State, and no heartbeat
            client.predict(*run[:3], i, *run[4:], api_name="/lab_run")
            if i in (1, 10, 25, 50):
                sizes[i] = process_rss(pid)
        run_mb = 10 * 3 * (4 * 64) ** 2 * 3 / 2**20  # 3 pictures a step, each a 4x4 grid of 64x64 RGB
        print(f"\n50 API sessions x (16 images x 10 steps, {run_mb:.1f} MB each; {50 * run_mb:.0f} MB if all were "
              f"kept), budget 16 MB: server RSS after session 1 {sizes[1] / 2**20:.0f} MB, then +"
              f"{(sizes[10] - sizes[1]) / 2**20:.0f} MB at 10, +{(sizes[25] - sizes[1]) / 2**20:.0f} MB at 25, "
              f"+{(sizes[50] - sizes[1]) / 2**20:.0f} MB at 50")
        # keeping the last 25 runs would add at least 25 x 5.6 MB of arrays: they are not kept
        assert (sizes[50] - sizes[25]) / 2**20 < 0.75 * 25 * run_mb
        # the newest user still scrubs their run; the oldest is told to run again
        assert client.predict(1, api_name="/lab_show")[0] is not None
        client.session_hash = sessions[0]
        with pytest.raises(AppError, match="released because memory was needed for newer runs: run the reverse"):
            client.predict(1, api_name="/lab_show")
        client.close()


def test_state_expires_for_api_clients(serve) -> None:
    budget = StateBudget(max_bytes=2**30, ttl_s=1.5)
    _, client, _ = serve(queue_size=8, state_budget=budget)
    client.predict("ddpm-mnist", "ddim", 2, 0, "", 1.0, api_name="/lab_run")
    assert client.predict(1, api_name="/lab_show")[0] is not None
    time.sleep(3.5)  # gradio drops expired state every second and calls the budget back
    with pytest.raises(AppError, match="Run the reverse process first|released because"):
        client.predict(1, api_name="/lab_show")
    assert len(budget) == 0


# ----- 4. temporary files -----
def classroom_dirs() -> set[str]:
    return set(glob.glob(str(Path(tempfile.gettempdir()) / "diffusion-classroom-*")))


def test_exports_without_a_run_create_nothing(served) -> None:
    _, client, _ = served
    before = classroom_dirs()
    for _ in range(20):
        with pytest.raises(AppError, match="Run the reverse process first"):
            client.predict(api_name="/lab_recipe")
    assert classroom_dirs() == before


def test_exports_share_one_root_that_is_swept_and_removed(tmp_path: Path) -> None:
    exports = ExportDir(max_age_s=60, interval_s=3600, prefix=str(tmp_path / "exp-"))
    assert exports.root is None
    paths = [exports.path("recipe.json") for _ in range(3)]
    for p in paths:
        p.write_text("{}")
    root = exports.root
    assert root is not None and all(p.parent.parent == root for p in paths) and len(set(paths)) == 3
    assert exports.sweep(now=time.time() + 30) == 0
    assert exports.sweep(now=time.time() + 120) == 3 and not any(p.exists() for p in paths)
    with pytest.raises(ValueError, match="plain file name"):
        exports.path("../escape.json")
    exports.remove()
    assert not root.exists()


def test_the_app_cleans_gradio_cache(served) -> None:
    app, _, _ = served
    assert app.delete_cache is not None and app.delete_cache[1] <= 24 * 3600


# ----- 5. recipes and the CLI -----
def recipe_text(**request) -> str:
    return json.dumps({"format": "diffusion-classroom/recipe@1", "model": "local/tiny-ddpm",
                       "request": {"sampler": "ddim", "steps": 2, "n": 1, **request}})


@pytest.mark.parametrize("text, message", [
    (recipe_text(steps="50"), "request.steps must be a whole number"),
    (recipe_text(n="4"), "request.n must be a whole number"),
    (recipe_text(eta="0"), "request.eta must be a number"),
    (recipe_text(n=1.5), "request.n must be a whole number"),
    (recipe_text(steps=2.5), "request.steps must be a whole number"),
    (recipe_text(steps=True), "request.steps must be a whole number"),
    (recipe_text(prompt=123), "request.prompt must be a string"),
    (recipe_text(sampler=["ddim"]), "request.sampler must be a string"),
    (recipe_text(sampler="bogus"), "unknown sampler"),
    (recipe_text(steps=0), "Steps must be a whole number between 1 and 1000"),
    (recipe_text(seed=2**40), "Seed must be a whole number between 0 and 4294967295"),
    (recipe_text(colour="red"), "request has unknown keys: 'colour'"),
    (recipe_text().replace('"n": 1', '"n": 1, "seed": Infinity'), "request.seed must be a whole number, got Infinity"),
    (recipe_text().replace('"n": 1', '"n": 1, "eta": NaN'), "eta must be a number between 0 and 1, got nan"),
    (recipe_text().replace('"n": 1', '"n": 1, "guidance_scale": -Infinity'), "Guidance scale must be a number between"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"recipe"', "must be a JSON object, got str"),
    ("{", "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (json.dumps({"format": "diffusion-classroom/recipe@1", "model": "m", "request": {}, "extra": 1}),
     "unknown keys: 'extra'"),
    (json.dumps({"format": "other", "model": "m", "request": {}}), "not a Diffusion Classroom recipe"),
    (json.dumps({"format": "diffusion-classroom/recipe@1", "model": "m", "request": {},
                 "scheduler_config": {"x": {"y": 1}}}), "plain JSON value"),
])
def test_recipe_schema_refuses_each_bad_value_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Recipe.from_json(text)
    assert "\n" not in str(info.value)


def test_recipe_round_trips_and_its_scheduler_config_is_checked(studio) -> None:
    model = studio.load("local/tiny-ddpm")
    request = SampleRequest(sampler="dpmpp-2m", steps=3, n=2, seed=5, eta=0.0)
    recipe = make_recipe("local/tiny-ddpm", request, model.scheduler_config, "fp32")
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    again.check_scheduler_config(model.scheduler_config)
    data = json.loads(recipe.to_json())
    data["scheduler_config"]["beta_end"] = 0.5
    with pytest.raises(ValueError, match="scheduler config does not match.*beta_end"):
        Recipe.from_json(json.dumps(data)).check_scheduler_config(model.scheduler_config)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=30,
)
request_like = st.fixed_dictionaries({}, optional={
    "sampler": st.sampled_from(["ddim", "ddpm", "euler", "x"]) | json_values,
    "steps": st.integers(-5, 2000) | json_values, "n": st.integers(-2, 100) | json_values,
    "seed": st.integers(-1, 2**33) | json_values, "eta": st.floats(-1, 2) | json_values,
    "prompt": json_values, "guidance_scale": json_values})


@settings(max_examples=300, deadline=None)
@given(data=json_values | st.fixed_dictionaries(
    {"format": st.just("diffusion-classroom/recipe@1") | json_values, "model": st.text(max_size=10) | json_values,
     "request": request_like | json_values},
    optional={"precision": st.sampled_from(["fp32", "bf16", "fp8"]) | json_values,
              "scheduler_config": json_values, "versions": json_values, "other": json_values}))
def test_recipe_loader_only_ever_raises_value_error(data) -> None:
    try:
        recipe = Recipe.from_json(json.dumps(data))
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(recipe.request, SampleRequest) and 1 <= recipe.request.steps <= 1000


@pytest.mark.parametrize("text", [
    recipe_text(steps="50"), "[1]", recipe_text(steps=2.5), "[" * 100000 + "]" * 100000,
    recipe_text().replace('"n": 1', '"n": 1, "seed": Infinity'),
])
def test_cli_recipe_errors_are_one_line_and_exit_2(tmp_path: Path, tiny_ddpm_dir: Path, capsys, text) -> None:
    path = tmp_path / "recipe.json"
    path.write_text(text)
    code = main(parse_args(["--model-dir", str(tiny_ddpm_dir), "--recipe", str(path), "--out",
                            str(tmp_path / "x.png")]))
    assert code == 2 and not (tmp_path / "x.png").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_cli_model_dir_problems_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("[]")
    assert main(parse_args(["--list", "--model-dir", "/etc"])) == 2
    assert main(parse_args(["--list", "--model-dir", str(bad)])) == 2
    (bad / "model_index.json").write_text("{not json")
    assert main(parse_args(["--list", "--model-dir", str(bad)])) == 2


def test_app_model_dir_problems_are_one_line(tmp_path: Path) -> None:

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("[]")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "app.py", "--model-dir", str(bad)], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--model-dir" in out.stderr and "must hold a JSON object" in out.stderr
