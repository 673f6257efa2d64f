"""Serving where the platform says: a Hugging Face Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
and starts ``python app.py`` with no flags (issue: deploy as a Space unchanged)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app import DEFAULT_HOST, DEFAULT_PORT, listen_address
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_flag_beats_the_platform_which_beats_the_default() -> None:
    space = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}
    assert listen_address(None, None, {}) == (DEFAULT_HOST, DEFAULT_PORT)
    assert listen_address(None, None, space) == ("0.0.0.0", 7861)
    assert listen_address("127.0.0.1", 9000, space) == ("127.0.0.1", 9000)
    assert listen_address(None, 9000, space) == ("0.0.0.0", 9000)
    for bad in ("http", "-1", "70000"):
        with pytest.raises(ValueError, match="port"):
            listen_address(None, None, {"GRADIO_SERVER_PORT": bad})


def test_app_starts_as_a_space_starts_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SPACE_ID": "someone/diffusion-classroom", "GRADIO_SERVER_NAME": "0.0.0.0",
           "GRADIO_SERVER_PORT": str(port)}
    log_path = tmp_path / "space.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.5)
            assert page.status_code == 200 and "Diffusion Classroom" in page.text
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_a_bad_platform_port_is_one_line() -> None:
    env = {**os.environ, "GRADIO_SERVER_PORT": "http"}
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "app.py: GRADIO_SERVER_PORT must be a port number, got 'http'"


def test_the_space_front_matter_is_a_valid_space_card() -> None:
    import gradio
    from huggingface_hub import SpaceCard, SpaceCardData

    card = SpaceCard.load(ROOT / "README.md")
    data = card.data
    assert isinstance(data, SpaceCardData)
    assert data.sdk == "gradio" and data.sdk_version == gradio.__version__  # the version requirements pin
    assert data.python_version == "3.11"  # numpy 2.4 needs Python 3.11 or later; a Space's default is 3.10
    assert data.app_file == "app.py" and (ROOT / data.app_file).is_file()
    assert data.tags and "diffusion" in data.tags
    short = data.to_dict()["short_description"]
    assert 0 < len(short) <= 60
    requirements = (ROOT / "requirements.txt").read_text()
    assert f"gradio=={gradio.__version__}" in requirements
