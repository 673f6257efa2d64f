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
def studio(tiny_ddpm_dir: Path, tiny_sd_dir: Path):
    from diffusion.registry import Registry
    from diffusion.service import Studio

    return Studio(Registry.default([tiny_ddpm_dir, tiny_sd_dir]), device="cpu")
