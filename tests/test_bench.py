"""The benchmark module's measurements on tiny models (the figures themselves are printed by
``python -m diffusion.bench``, never asserted: timing is not a pass/fail matter)."""

from __future__ import annotations

import pytest

import argparse

import torch

from diffusion import bench, bench_app
from diffusion.loading import load_pipeline
from diffusion.registry import local_card


def test_parity_rows_compare_identical_images(tiny_ddpm_dir, tiny_sd_dir):
    pixel = load_pipeline(local_card(tiny_ddpm_dir), torch.device("cpu"))
    latent = load_pipeline(local_card(tiny_sd_dir), torch.device("cpu"))
    rows = bench.bench_parity(pixel, latent, repeats=1, n=2, steps=2, latent_n=1)
    measured = [r.data for r in rows if "max_abs_diff" in r.data]
    assert len(measured) == 2  # pixel (DDIMPipeline) and latent (StableDiffusionPipeline)
    for data in measured:
        assert data["max_abs_diff"] < 1e-4 and data["ratio"] > 0
    assert len(rows) == 6


def test_flops_and_peak_are_measured(tiny_ddpm_dir):
    pixel = load_pipeline(local_card(tiny_ddpm_dir), torch.device("cpu"))
    flops = bench.unet_flops(pixel)
    assert flops > 10_000  # a real count of the tiny UNet's convolutions and matmuls
    assert bench.matmul_peak(torch.float32, size=128, repeats=1) > 0


def test_table_lists_every_row():
    rows = [bench.Row("S", "a", "1 s", "note"), bench.Row("S", "b", "2 s")]
    table = bench.render_table(rows, 60.0, argparse.Namespace())
    assert table.count("\n| S |") == 2 and "Machine:" in table


def test_recording_memory_is_measured_with_the_kept_arrays(tiny_sd_dir):
    m = bench_app.measure_recording("local/tiny-sd", "ddim", 3, 1, "a red circle", local_dirs=(str(tiny_sd_dir),))
    assert m["attention"] == 1.0 and m["wall_s"] > 0 and m["extra_peak_mib"] >= 0
    # 3 steps of 16x16 pictures, guidance pairs, latent channels and 3 x (6, 8, 8) float16 maps
    assert 0.005 < m["kept_mib"] < 0.1


def test_speed_rows_cover_both_precisions(tiny_ddpm_dir, tiny_sd_dir):
    pixel = load_pipeline(local_card(tiny_ddpm_dir), torch.device("cpu"))
    latent = load_pipeline(local_card(tiny_sd_dir), torch.device("cpu"))
    rows = bench.bench_speed(pixel, latent, repeats=1, quick=True)
    precisions = 2 if bench.cpu_has_native_bf16() else 1
    assert len(rows) == 3 * precisions  # DDIM 25, DPM++ 20, the latent model
    assert all(r.data["seconds"] > 0 for r in rows)
    assert sum("bf16" in r.name for r in rows) == 3 * (precisions - 1)


@pytest.mark.slow
def test_the_playground_rows_report_speed_and_the_time_to_target():
    rows = bench_app.bench_playground(steps=300, measure_every=100)
    assert [r.section for r in rows] == ["Playground"] * 3
    data = rows[0].data
    assert data["steps_per_s"] > 0 and data["train_s"] > 0 and data["floor"] > 0
    assert data["ratio"] == data["distance"] / data["floor"]
    assert "steps/s" in rows[0].value and ("step" in rows[1].value or rows[1].value == "not reached")
