"""Registry, loading and its failures: clear messages, safetensors only, one load per model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from diffusion import loading
from diffusion.loading import LatentTextModel, ModelLoadError, ModelStore, PixelModel
from diffusion.registry import BUILTIN_CARDS, Registry, local_card


def test_builtin_cards_cover_the_required_models() -> None:
    ids = {c.id for c in BUILTIN_CARDS}
    assert {"ddpm-mnist", "google/ddpm-cifar10-32", "google/ddpm-celebahq-256", "CompVis/ldm-text2im-large-256",
            "stabilityai/sd-turbo", "stable-diffusion-v1-5/stable-diffusion-v1-5"} <= ids
    for card in BUILTIN_CARDS:
        assert card.kind in ("pixel", "latent-text") and card.resolution > 0 and card.license
        assert card.local or (card.download_mb or 0) > 0


def test_local_cards_are_typed_from_the_folder(tiny_ddpm_dir: Path, tiny_sd_dir: Path) -> None:
    pixel, text = local_card(tiny_ddpm_dir), local_card(tiny_sd_dir)
    assert (pixel.kind, pixel.resolution, pixel.id) == ("pixel", 8, "local/tiny-ddpm")
    assert (text.kind, text.resolution) == ("latent-text", 16)
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        local_card(tiny_ddpm_dir / "unet")


def test_store_loads_both_kinds(tiny_ddpm_dir: Path, tiny_sd_dir: Path) -> None:
    store = ModelStore(Registry.default([tiny_ddpm_dir, tiny_sd_dir]), "cpu")
    assert isinstance(store.get("local/tiny-ddpm"), PixelModel)
    text = store.get("local/tiny-sd")
    assert isinstance(text, LatentTextModel) and text.vae_scale_factor == 2


def test_missing_folder_gives_a_clear_error(tmp_path: Path, tiny_ddpm_dir: Path) -> None:
    registry = Registry.default()
    registry.with_source("ddpm-mnist", str(tmp_path / "gone"))
    with pytest.raises(ModelLoadError, match="ddpm-mnist.*missing"):
        ModelStore(registry, "cpu").get("ddpm-mnist")


def test_uncached_hub_model_offline_fails_fast_and_names_remedies(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        ModelStore(Registry.default(), "cpu").get("google/ddpm-cifar10-32")
    message = str(info.value)
    assert "google/ddpm-cifar10-32" in message and "--model-dir" in message and "cache" in message


def test_pickle_only_weights_are_refused(tmp_path: Path, tiny_ddpm_dir: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_ddpm_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        ModelStore(Registry.default([folder]), "cpu").get("local/pickled")


def test_two_concurrent_first_requests_load_once(monkeypatch: pytest.MonkeyPatch, tiny_ddpm_dir: Path) -> None:
    calls = []
    real = loading.load_pipeline

    def counting(card, device, *options):
        calls.append(card.id)
        return real(card, device, *options)

    monkeypatch.setattr(loading, "load_pipeline", counting)
    store = ModelStore(Registry.default([tiny_ddpm_dir]), "cpu")
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.get("local/tiny-ddpm"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["local/tiny-ddpm"]
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_device_and_dtype_choice() -> None:
    import torch

    assert loading.choose_device("cpu") == torch.device("cpu")
    assert loading.choose_dtype(torch.device("cpu")) == torch.float32
    assert loading.choose_dtype(torch.device("cuda")) == torch.float16


def test_uncached_hub_model_without_network_fails_within_seconds(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """Not offline mode: the hub is simply unreachable (a closed port stands in for no network)."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert not loading.hub_reachable()
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not available offline"):
        ModelStore(Registry.default(), "cpu").get("google/ddpm-celebahq-256")
    assert time.perf_counter() - start < 30  # bounded, not a benchmark: a hang would fail here
