"""The app as a package: ``pip install .`` works from a clone, the commands run from any folder, every
command line explains itself, and there is one version."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLIS = {  # console script -> the module whose parser() builds its command line
    "diffusion-classroom": "demo.launch",
    "diffusion-classroom-sample": "diffusion.sample",
    "diffusion-classroom-deploy": "diffusion.deploy",
    "diffusion-classroom-bench": "diffusion.bench",
    "diffusion-classroom-gate-digits": "diffusion.metrics.mnist_gate",
    "diffusion-classroom-gate-shapes": "diffusion.metrics.shapes_gate",
    "diffusion-classroom-gate-planner": "diffusion.metrics.planner_gate",
}


def test_every_package_folder_is_listed_and_the_assets_install_with_them() -> None:
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    folders = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
               for top in ("diffusion", "demo") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == folders | {"diffusion.assets"}
    assert PROJECT["tool"]["setuptools"]["package-dir"] == {"diffusion.assets": "assets"}
    assert PROJECT["project"]["name"] == "diffusion-classroom"  # not "diffusion" or "demo": other projects


@pytest.mark.slow
def test_each_console_script_has_its_own_name_a_version_and_help_on_every_flag() -> None:
    from diffusion import __version__

    assert PROJECT["project"]["scripts"].keys() == CLIS.keys()
    for script, module in CLIS.items():
        target = PROJECT["project"]["scripts"][script]
        assert target.split(":")[0] == module
        assert callable(getattr(importlib.import_module(module), target.split(":")[1]))
        parser = importlib.import_module(module).parser()
        assert parser.prog == script
        assert [a.dest for a in parser._actions if not a.help] == [], script
        assert any("--version" in a.option_strings for a in parser._actions), script
    out = subprocess.run([sys.executable, "app.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == f"diffusion-classroom {__version__}"


def test_one_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    from diffusion import __version__

    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "diffusion.__version__"}
    assert "version" in PROJECT["project"]["dynamic"] and "version" not in PROJECT["project"]
    try:  # installed (pip install -e . or .): the metadata says the same
        assert version("diffusion-classroom") == __version__
    except PackageNotFoundError:
        pass


def test_threads_zero_means_the_same_in_the_cli_and_the_app() -> None:
    """``--threads 0`` is the cores this process may use in every command (one function decides)."""
    import demo.launch
    import diffusion.bench
    import diffusion.sample

    for module in (demo.launch, diffusion.sample, diffusion.bench):
        text = Path(module.__file__).read_text()
        assert "configure_threads(args.threads)" in text and "set_num_threads(args.threads)" not in text, module


@pytest.mark.slow
def test_pip_install_from_a_clone_then_run_from_another_folder(tmp_path: Path) -> None:
    """``pip install .`` into a fresh virtual environment (the dependencies come from this one), then the
    commands run from a folder that is not the clone: the shipped weights are found through the package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    where = subprocess.run([str(python), "-c", "import diffusion, diffusion.registry as r; "
                            "print(diffusion.__file__); print(r.ASSETS)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    package, assets = where.stdout.split()
    assert package.startswith(str(venv)) and assets.startswith(str(venv)), where.stdout  # not the clone's
    helped = subprocess.run([str(venv / "bin" / "diffusion-classroom"), "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "usage: diffusion-classroom" in helped.stdout, helped.stderr
    sampled = subprocess.run([str(venv / "bin" / "diffusion-classroom-sample"), "--n", "1", "--steps", "5",
                              "--out", "one.png", "--save-npy", "one.npy", "--threads", "1"], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=300)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    import numpy as np

    digit = np.load(elsewhere / "one.npy")
    assert digit.shape == (1, 32, 32) and digit.dtype == np.uint8 and digit.std() > 10  # a picture, not a blank
    assert (elsewhere / "one.png").stat().st_size > 0
