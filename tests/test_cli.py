"""The sampling CLI: files, shapes and byte-identical reruns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion.sample import main, parse_args


def run(tmp_path: Path, name: str, *extra: str) -> tuple[bytes, np.ndarray]:
    out, npy = tmp_path / f"{name}.png", tmp_path / f"{name}.npy"
    code = main(parse_args([*extra, "--out", str(out), "--save-npy", str(npy)]))
    assert code == 0
    return out.read_bytes(), np.load(npy)


def test_pixel_cli_is_byte_identical(tmp_path: Path, tiny_ddpm_dir: Path) -> None:
    args = ("--model-dir", str(tiny_ddpm_dir), "--model", "local/tiny-ddpm", "--sampler", "ddpm", "--steps", "3",
            "--n", "5", "--seed", "9")
    png1, arr1 = run(tmp_path, "a", *args)
    png2, arr2 = run(tmp_path, "b", *args)
    assert png1 == png2
    assert arr1.dtype == np.uint8 and arr1.shape == (5, 8, 8)
    np.testing.assert_array_equal(arr1, arr2)


def test_text_cli_saves_colour_samples(tmp_path: Path, tiny_sd_dir: Path) -> None:
    _, arr = run(tmp_path, "t", "--model-dir", str(tiny_sd_dir), "--model", "local/tiny-sd", "--prompt",
                 "a red circle", "--negative-prompt", "blue", "--guidance", "3", "--steps", "2", "--n", "2")
    assert arr.dtype == np.uint8 and arr.shape == (2, 16, 16, 3)


def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path, tiny_ddpm_dir: Path) -> None:
    assert main(parse_args(["--model", "no-such-model", "--out", str(tmp_path / "x.png")])) == 2
    assert main(parse_args(["--model-dir", str(tiny_ddpm_dir), "--model", "local/tiny-ddpm", "--steps", "5000",
                            "--out", str(tmp_path / "x.png")])) == 2
    assert not (tmp_path / "x.png").exists()


def test_large_n_runs_in_batches_equal_to_the_batches_run_one_by_one(tmp_path: Path, tiny_ddpm_dir: Path) -> None:
    """--n above the app's batch cap runs in batches; batch b uses seed + b; reruns are byte-identical."""
    base = ("--model-dir", str(tiny_ddpm_dir), "--model", "local/tiny-ddpm", "--sampler", "ddim", "--steps", "2")
    png1, whole = run(tmp_path, "whole", *base, "--n", "70", "--batch-size", "32", "--seed", "4")
    png2, again = run(tmp_path, "again", *base, "--n", "70", "--batch-size", "32", "--seed", "4")
    assert whole.shape == (70, 8, 8) and png1 == png2
    np.testing.assert_array_equal(whole, again)
    parts = [run(tmp_path, f"part{b}", *base, "--n", str(n), "--seed", str(4 + b))[1]
             for b, n in enumerate((32, 32, 6))]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    _, default = run(tmp_path, "default", *base, "--n", "100", "--seed", "4")  # default batches of 64
    np.testing.assert_array_equal(default[:64], run(tmp_path, "first", *base, "--n", "64", "--seed", "4")[1])
    assert main(parse_args([*base, "--n", "10", "--batch-size", "65", "--out", str(tmp_path / "x.png")])) == 2
