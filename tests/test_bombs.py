"""Pixel bombs and broken images are refused before decoding, with a clear message."""

from __future__ import annotations


import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from diffusion.images import data_url_bytes, read_image
from tests.helpers import bomb_png, peak_rss, peak_rss_reset, rss

GENERIC = "verbose error reporting"


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


@pytest.mark.slow
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


def test_a_read_only_image_is_copied_before_torch_wraps_it() -> None:
    """A decoded image shared read-only between requests (``np.asarray`` of a PIL image) reaches the model as a
    copy: torch warned that wrapping it was undefined behaviour (seen in lesson 6). Run in a fresh process, since
    torch warns only once in a process."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import numpy as np; from diffusion.images import from_uint8; "
            "a = np.full((1, 2, 2, 3), 255, np.uint8); a.flags.writeable = False; "
            "t = from_uint8(a); assert float(t.max()) == 1.0")
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
