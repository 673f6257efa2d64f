"""Rombach et al.'s trade by downsampling factor (diffusion/lab/compression.py): reconstructions, PSNR, the
UNet's cost at each factor's latent shape, and the gate's figures of the shipped autoencoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffusion.lab.compression import FACTORS, RESULTS_FILE, psnr, read_bounds


@pytest.fixture(scope="module")
def tiny_autoencoders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny autoencoders with a results file of two figures for f = 2."""
    from tests.tiny import save_tiny_autoencoders

    folder = save_tiny_autoencoders(tmp_path_factory.mktemp("autoencoders"))
    (folder / RESULTS_FILE).write_text(json.dumps({"factors": {"2": {"psnr": 30.5, "exact": 0.9}}}))
    return folder


def test_psnr_is_torchmetrics_on_uint8_and_infinite_for_the_image_itself() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-4)
    assert psnr(a, a) == float("inf")


def test_the_studio_compares_factors_on_one_image(studio, tiny_autoencoders: Path) -> None:
    """f = 1, 2, 4, 8 in order: the image itself at f = 1 (nothing to decode), each factor's UNet on its latent
    shape with fewer values as f grows, the same bytes for the same image, and the gate's figures where written."""
    from diffusion.studio import Studio

    here = Studio(studio.registry, device="cpu", precision="fp32", cache_bytes=0, autoencoders=tiny_autoencoders)
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    view = next(here.lessons.compression("local/tiny-sd", image, repeats=1))
    assert [r.factor for r in view.rows] == list(FACTORS)
    pixels, *latents = view.rows
    assert np.array_equal(pixels.reconstruction, image) and pixels.psnr == float("inf") and pixels.decode_ms == 0
    assert pixels.cost.shape == (3, 16, 16)
    assert [r.cost.shape for r in latents] == [(4, 8, 8), (4, 4, 4), (4, 2, 2)]
    flops = [r.cost.flops for r in view.rows]
    assert flops == sorted(flops, reverse=True) and flops[0] > 4 * flops[-1]
    assert all(r.reconstruction.shape == image.shape and r.reconstruction.dtype == np.uint8 for r in latents)
    assert all(np.isfinite(r.psnr) and r.decode_ms > 0 for r in latents)
    assert view.rows[1].bound == {"psnr": 30.5, "exact": 0.9} and view.rows[2].bound == {}
    again = next(here.lessons.compression("local/tiny-sd", image, repeats=1))
    assert all(np.array_equal(a.reconstruction, b.reconstruction) for a, b in zip(view.rows, again.rows))
    assert latents[0].seconds_per_sample(25, True) == pytest.approx((50 * latents[0].cost.ms + latents[0].decode_ms) / 1000)


def test_the_comparison_refuses_what_it_cannot_draw(studio, tiny_autoencoders: Path, tmp_path: Path) -> None:
    from diffusion.studio import Studio

    here = Studio(studio.registry, device="cpu", precision="fp32", cache_bytes=0, autoencoders=tiny_autoencoders)
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="has no autoencoder"):
        here.lessons.compression("local/tiny-ddpm", image)
    with pytest.raises(ValueError, match="uint8 RGB"):  # refused when called: no job would start
        here.lessons.compression("local/tiny-sd", np.zeros((64, 64), np.uint8))
    larger = next(here.lessons.compression("local/tiny-sd", np.zeros((64, 64, 3), np.uint8), repeats=1))
    assert larger.rows[0].reconstruction.shape == (16, 16, 3)  # resized to the model's image size
    missing = Studio(studio.registry, device="cpu", precision="fp32", cache_bytes=0, autoencoders=tmp_path)
    with pytest.raises(ValueError, match="f = 2 is missing"):
        missing.lessons.compression("local/tiny-sd", image)


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "autoencoders"


@pytest.mark.skipif(not (SHIPPED / RESULTS_FILE).is_file(), reason="the autoencoders are not shipped")
def test_the_shipped_autoencoders_hold_their_gate_figures() -> None:
    """The PSNR the gate wrote for each shipped autoencoder, recomputed on the same held-out scenes, and the
    trade Rombach et al. describe: each doubling of f loses reconstruction quality."""
    from diffusion.metrics.compression_gate import PSNR_SEED, reconstructions
    from diffusion.data import shapes
    from diffusion.lab.compression import autoencoder_folder, load_autoencoder

    bounds = read_bounds(SHIPPED)
    held_out = shapes.render_batch(256, PSNR_SEED)[0]
    for f in (2, 4, 8):
        recon = reconstructions(load_autoencoder(autoencoder_folder(SHIPPED, f)), held_out)
        assert psnr(held_out, recon) == pytest.approx(bounds[f]["psnr"], abs=0.01)
    assert bounds[2]["psnr"] > bounds[4]["psnr"] > bounds[8]["psnr"]
    assert bounds[1]["exact"] >= bounds[8]["exact"]


@pytest.mark.skipif(not (SHIPPED / RESULTS_FILE).is_file(), reason="the autoencoders are not shipped")
def test_the_docs_table_of_factors_is_the_results_file() -> None:
    """docs/models.md's table by downsampling factor is the gate's file rendered again, byte for byte."""
    import re

    from diffusion.metrics.compression_gate import compression_table

    docs = (SHIPPED.parent.parent / "docs" / "models.md").read_text()
    block = re.search(r"<!-- compression: assets/autoencoders/compression_results.json -->\n((?:\|.*\n)+)", docs)
    assert block is not None
    assert block.group(1) == compression_table(json.loads((SHIPPED / RESULTS_FILE).read_text()))
