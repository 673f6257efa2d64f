"""Serving where the platform says: a Hugging Face Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
and starts ``python app.py`` with no flags (a Space deploys the app unchanged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app import DEFAULT_HOST, DEFAULT_PORT, listen_address
from tests.load import app_server

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


@pytest.mark.slow
def test_app_starts_as_a_space_starts_it(tmp_path: Path) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with app_server(tmp_path, space=True) as (_, url):  # no flags: the port comes from GRADIO_SERVER_PORT
        page = httpx.get(url, timeout=10)
        client = Client(url, verbose=False)
        # Space mode: a DDPM-1000 batch of 64 digits (about 240 s here) is over a request's budget
        with pytest.raises(AppError, match=r"needs about \d+ s of compute.*What fits: \d+ images at 1000 steps"):
            client.predict("ddpm-mnist", "ddpm", 1000, 0.0, 64, 0, api_name="/sample")
        client.close()
    assert page.status_code == 200 and "Diffusion Classroom" in page.text
    assert "Space mode" in next(tmp_path.glob("app-*.log")).read_text()


@pytest.mark.slow
def test_space_mode_keeps_one_hub_model_and_refuses_work_over_budget(tiny_ddpm_dir: Path, tiny_sd_dir: Path) -> None:
    from diffusion.registry import Registry
    from diffusion.request import SampleRequest
    from diffusion.studio import Studio

    studio = Studio(Registry.default([tiny_ddpm_dir, tiny_sd_dir]), device="cpu", precision="fp32",
                    work_budget_s=5.0, hub_models_at_once=1)
    studio.sample("local/tiny-ddpm", SampleRequest("ddim", 2, n=1))
    studio.sample("local/tiny-sd", SampleRequest("ddim", 2, n=1, prompt="a red circle"))
    assert studio.store.loaded() == ["local/tiny-sd"]  # the first non-embedded model was unloaded
    # local folders are counted at 50 ms per image-step: 4 x 100 x 0.05 = 20 s > 5 s
    with pytest.raises(ValueError, match="needs about 20 s.*allows 5 s a request. What fits: 1 image at 100 "
                                         "steps or 25 steps for 4 images"):
        studio.sample("local/tiny-ddpm", SampleRequest("ddim", 100, n=4))
    # guidance runs the UNet twice: 2 x 1 x 30 x 0.05 = 3 s fits, 2 x 2 x 30 x 0.05 = 6 s does not
    studio.sample("local/tiny-sd", SampleRequest("ddim", 30, n=1, prompt="a red circle", guidance_scale=3.0))
    with pytest.raises(ValueError, match="needs about 6 s"):
        studio.sample("local/tiny-sd", SampleRequest("ddim", 30, n=2, prompt="a red circle", guidance_scale=3.0))
    with pytest.raises(ValueError, match="fewer steps, fewer images or a smaller model"):
        list(studio.race("local/tiny-ddpm", SampleRequest(seed=1)))  # 1100 steps of four samplers


@pytest.mark.slow
def test_a_bad_platform_port_is_one_line() -> None:
    env = {**os.environ, "GRADIO_SERVER_PORT": "http"}
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "diffusion-classroom: GRADIO_SERVER_PORT must be a port number, got 'http'"


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
    meta = data.to_dict()
    assert meta["suggested_hardware"] == "cpu-basic"
    from diffusion.deploy import check_card, hub_models

    assert sorted(meta["models"]) == hub_models() and set(meta["preload_from_hub"]) <= set(meta["models"])
    check_card(ROOT / "README.md")


# ----- deploy: a clean Space folder, LFS for large files -----
def test_every_file_over_10_mb_that_a_space_gets_is_stored_with_lfs() -> None:
    from diffusion.deploy import HUB_FILE_LIMIT, check_lfs, lfs_patterns, space_files

    files = space_files()
    patterns = lfs_patterns((ROOT / ".gitattributes").read_text())
    big = [f for f in files if f.size > HUB_FILE_LIMIT]
    assert big, "the shipped weights include files over 10 MB: this test must see them"
    check_lfs(files, patterns)  # the repository's .gitattributes covers them
    assert all(f.lfs for f in big)
    assert not any(f.path.startswith(("tests/", ".ci/")) or f.path.endswith(".pyc") for f in files)


def test_a_large_file_outside_lfs_is_refused() -> None:
    from diffusion.deploy import DeployError, SpaceFile, check_lfs

    with pytest.raises(DeployError, match="over 10 MB outside Git LFS.*assets/big.bin"):
        check_lfs([SpaceFile("assets/big.bin", 11 * 2**20), SpaceFile("assets/w.safetensors", 20 * 2**20)])


def test_deploy_dry_run_lists_files_and_checks_the_card() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # offline: nothing is asked of the Hub
    out = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--dry-run"], cwd=ROOT, capture_output=True,
                         env=env, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("LFS  assets/ldm-shapes/unet/diffusion_pytorch_model.safetensors" in line for line in lines)
    assert any(line.endswith("  app.py") for line in lines)
    assert "any other file on the Space would be deleted" in lines[-1]
    assert "every file over 10 MB is in LFS" in lines[-1] and "Python 3.11" in lines[-1] and "cpu-basic" in lines[-1]


def test_the_space_gets_runtime_files_only() -> None:
    from diffusion.deploy import space_files

    files = {f.path for f in space_files()}
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes", "demo/launch.py",
            "assets/ddpm-mnist/unet/diffusion_pytorch_model.safetensors"} <= files
    assert not [f for f in files if f.startswith(("tests/", ".ci/", "diffusion/training/", "build/"))
                or f in {"diffusion/bench.py", "pyproject.toml"} or "screenshot" in f or "__pycache__" in f]


def test_deploy_uploads_this_folder_with_patterns_in_one_call(monkeypatch) -> None:
    """One upload_folder call on the repository itself: what it picks with the allow and ignore patterns (by
    huggingface_hub's own filter) is what the dry run lists, and files gone from here are deleted there."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    from diffusion import deploy

    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert deploy.main(["--space", "someone/classroom"]) == 0
    (create, kw1), (upload, kw2) = calls
    assert create == "create_repo" and kw1["repo_type"] == "space" and kw1["space_sdk"] == "gradio"
    assert upload == "upload_folder" and kw2["repo_id"] == "someone/classroom" and kw2["repo_type"] == "space"
    assert Path(kw2["folder_path"]) == ROOT and kw2["delete_patterns"] == ["*"]
    every = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if p.is_file() and p.relative_to(ROOT).parts[0] != ".git"]
    picked = set(filter_repo_objects(every, allow_patterns=kw2["allow_patterns"],
                                     ignore_patterns=kw2["ignore_patterns"]))
    assert picked == {f.path for f in deploy.space_files()}


def test_the_space_installs_the_cpu_only_torch_from_pyprojects_pins() -> None:
    """requirements.txt is written from pyproject.toml (the one list of pins) with PyTorch's CPU index first;
    pip then resolves the pinned torch==2.13.0 to its +cpu wheel (checked with packaging's version rules)."""
    import tomllib

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from diffusion.deploy import CPU_TORCH_INDEX, space_requirements

    text = (ROOT / "requirements.txt").read_text()
    assert text == space_requirements(), "run diffusion-classroom-deploy --write-requirements"
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert lines == [CPU_TORCH_INDEX, *pins] and "torch==2.13.0" in pins
    assert Version("2.13.0+cpu") in SpecifierSet("==2.13.0") and Version("2.13.0+cpu") > Version("2.13.0")


def test_deploy_problems_are_one_line() -> None:
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "x"}):
        out = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--space", "someone/classroom"], cwd=ROOT,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("deploy: "), out.stderr
    bad = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--space", "no-slash"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "USER/NAME" in bad.stderr
