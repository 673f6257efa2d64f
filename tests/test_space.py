"""Serving where the platform says: a Hugging Face Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
and starts ``python app.py`` with no flags (issue: deploy as a Space unchanged)."""

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
    out = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("LFS  assets/ldm-shapes/unet/diffusion_pytorch_model.safetensors" in line for line in lines)
    assert any(line.endswith("  app.py") for line in lines)
    assert "every file over 10 MB is in LFS" in lines[-1] and "Python 3.11" in lines[-1]


def test_deploy_builds_a_clean_folder_and_uploads_it(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    from diffusion import deploy

    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            folder = Path(kwargs["folder_path"])
            calls.append(("upload_folder", {**kwargs, "files": sorted(
                p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())}))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "space"
    assert deploy.main(["--space", "someone/classroom", "--out", str(out)]) == 0
    (create, kw1), (upload, kw2) = calls
    assert create == "create_repo" and kw1["repo_type"] == "space" and kw1["space_sdk"] == "gradio"
    assert upload == "upload_folder" and kw2["repo_id"] == "someone/classroom" and kw2["repo_type"] == "space"
    files = kw2["files"]
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes"} <= set(files)
    assert "assets/ddpm-mnist/unet/diffusion_pytorch_model.safetensors" in files
    assert not any(f.startswith("tests/") for f in files)
    assert "*.safetensors filter=lfs" in (out / ".gitattributes").read_text()
    assert (out / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()  # as is, by default


def test_deploy_can_ask_for_the_cpu_only_torch(tmp_path: Path) -> None:
    """--cpu-torch: the Space's requirements name PyTorch's CPU index first; pip then resolves the pinned
    torch==2.13.0 to its +cpu wheel (checked here with packaging's own version rules)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from diffusion.deploy import CPU_TORCH_INDEX, build

    build(tmp_path / "space", cpu_torch=True)
    lines = (tmp_path / "space" / "requirements.txt").read_text().splitlines()
    assert lines[0] == CPU_TORCH_INDEX and "torch==2.13.0" in lines
    assert Version("2.13.0+cpu") in SpecifierSet("==2.13.0") and Version("2.13.0+cpu") > Version("2.13.0")


def test_deploy_problems_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--space", "someone/classroom"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("deploy: ")
    bad = subprocess.run([sys.executable, "-m", "diffusion.deploy", "--space", "no-slash"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "USER/NAME" in bad.stderr


# ----- threads from the container's CPU quota -----
@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000\n"}, 2.0),
    ({"cpu.max": "50000 100000\n"}, 0.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_threads_follow_the_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    from diffusion.runtime import available_cores, cpu_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota is None else min(affinity, max(1, int(quota)))
    assert available_cores(tmp_path) == expected


# ----- model cards on the Hub's terms -----
CARDS = ["ddpm-mnist", "ldm-shapes", "lenet-mnist", "shapes-analyser"]


@pytest.mark.parametrize("name", CARDS)
def test_each_shipped_model_has_a_hub_model_card_whose_snippet_runs(name: str, monkeypatch) -> None:
    import re

    from huggingface_hub import ModelCard

    card = ModelCard.load(ROOT / "assets" / name / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "mit" and meta["library_name"] in ("diffusers", "pytorch")
    assert meta["pipeline_tag"] in ("unconditional-image-generation", "text-to-image", "image-classification")
    assert meta["tags"]
    if meta["library_name"] == "diffusers":
        assert meta["pipeline_tag"] != "image-classification"
    snippets = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(snippets) == 1
    code = re.sub(r"num_inference_steps=\d+", "num_inference_steps=2", snippets[0])  # the same call, faster
    monkeypatch.chdir(ROOT)  # the snippets use the assets/ paths
    scope: dict = {}
    exec(compile(code, f"assets/{name}/README.md", "exec"), scope)  # noqa: S102 - our own card's snippet
    if "images" in scope:
        assert len(scope["images"]) >= 1 and scope["images"][0].size[0] > 0


def test_training_the_judge_writes_the_same_card() -> None:
    from diffusion.training.train_lenet import CARD

    assert CARD.format(seed=0, epochs=30, acc=0.9870) == (ROOT / "assets/lenet-mnist/README.md").read_text()
