from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_ddpm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_ddpm

    return save_tiny_ddpm(tmp_path_factory.mktemp("tiny") / "tiny-ddpm")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_autoencoders_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random autoencoders with f = 2, 4, 8 for the tiny latent model's 16x16 images (lesson 6's comparison)."""
    from tests.tiny import save_tiny_autoencoders

    return save_tiny_autoencoders(tmp_path_factory.mktemp("tiny") / "autoencoders")


@pytest.fixture(scope="session")
def studio(tiny_ddpm_dir: Path, tiny_sd_dir: Path, tiny_autoencoders_dir: Path):
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    # no result sharing: the tests of the computations want every request to run
    return Studio(Registry.default([tiny_ddpm_dir, tiny_sd_dir]), device="cpu", precision="fp32", cache_bytes=0,
                  autoencoders=tiny_autoencoders_dir)


@pytest.fixture(scope="module")
def url(serve) -> str:
    """The address of the app on tiny models (a queue of 8), one per test module: the browser tests' page."""
    _, client, _ = serve(queue_size=8)
    return client.src


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve(tiny_ddpm_dir: Path, tiny_sd_dir: Path, tiny_autoencoders_dir: Path):
    """Start the real app in-process on tiny models; returns (app, client, studio)."""
    from gradio_client import Client

    from demo.app import CSS, build_app
    from tests.tiny import TINY_SD_SIDE
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    started = []

    def start(queue_size: int = 8, extra_dirs: list[Path] | None = None, precision: str = "fp32",
              embedded: bool = False, state_budget=None, ddpm_dir: Path | None = None, cache_bytes: int = 0):
        """``embedded``: serve the shipped models from assets/ instead of the tiny ones; ``ddpm_dir``:
        another tiny DDPM as ddpm-mnist; ``cache_bytes``: identical requests share results (0: off)."""
        registry = Registry.default([tiny_sd_dir, *(extra_dirs or [])])
        if not embedded:
            registry.with_source("ddpm-mnist", str(ddpm_dir or tiny_ddpm_dir))
            registry.with_source("ldm-shapes", str(tiny_sd_dir), resolution=TINY_SD_SIDE)
        studio = Studio(registry, device="cpu", precision=precision, cache_bytes=cache_bytes,
                        autoencoders=None if embedded else tiny_autoencoders_dir)
        app = build_app(studio, queue_size=queue_size, state_budget=state_budget)
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                   max_file_size="5mb", css=CSS)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        started.append((app, client))
        return app, client, studio

    yield start
    for app, client in started:
        client.close()
        app.close()


@pytest.fixture(scope="module")
def served(serve):
    """The app on the tiny models with a queue of 8, once per test module: (app, client, studio)."""
    return serve(queue_size=8)
