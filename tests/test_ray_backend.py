"""The Ray Serve backend (diffusion.ray_backend): a local Ray instance started here (2 CPUs), 2 replicas of
1 CPU each holding the tiny models. Same images as the in-process Studio, streams that arrive step by step,
a killed replica replaced, an unreachable cluster named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is optional: pip install -r requirements-scale.txt")
pytest.importorskip("ray.serve", reason="Ray Serve is optional: pip install -r requirements-scale.txt")

from diffusion.ray_backend import RayOptions, StudioSettings, check_reachable, ray_studio, shutdown  # noqa: E402
from diffusion.registry import Registry  # noqa: E402
from diffusion.request import SampleRequest  # noqa: E402
from diffusion.studio import BackendError  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray instance and its replicas

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = RayOptions(replicas=2, replica_cpus=1, local_cpus=2, stall_s=60)


@pytest.mark.slow
def test_the_app_on_ray_replicas_gives_the_local_pictures_and_streams(tiny_ddpm_dir: Path, tiny_sd_dir: Path,
                                                                      studio, tmp_path: Path) -> None:
    """``python app.py --backend ray`` (its own local Ray instance, 2 replicas of 1 CPU): the Gradio API is
    unchanged, the pictures equal the in-process Studio's, previews stream. Runs before the module's own
    Ray instance starts (one instance on this machine at a time)."""
    import torch
    from gradio_client import Client
    from PIL import Image

    from diffusion.images import make_grid
    from tests.load import app_server

    args = ("--backend", "ray", "--replicas", "2", "--replica-cpus", "1", "--precision", "fp32",
            "--model-dir", str(tiny_ddpm_dir), "--model-dir", str(tiny_sd_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each replica
    try:
        with app_server(tmp_path, *args) as (_, url):
            client = Client(url, verbose=False)
            grid, status = client.predict("local/tiny-ddpm", "ddim", 4, 0.0, 3, 21, api_name="/sample")
            here = studio.sample("local/tiny-ddpm", SampleRequest("ddim", 4, 3, 21))
            np.testing.assert_array_equal(np.asarray(Image.open(grid)), make_grid(here))
            job = client.submit("local/tiny-sd", "a red circle", "", 3.0, "ddim", 20, 5, 2, api_name="/text_to_image")
            final = job.result()
            assert len(job.outputs()) > 1 and "Step 20/20" in final[2]  # streamed updates, then the result
            here = studio.sample("local/tiny-sd", SampleRequest("ddim", 20, 2, 5, prompt="a red circle",
                                                                guidance_scale=3.0))
            np.testing.assert_array_equal(np.asarray(Image.open(final[0])), make_grid(here))
            *_, equation, _, lab_status = client.predict("local/tiny-sd", "ddim", 3, 7, "a star", 3.0,
                                                      api_name="/lab_run")
            assert "Done: 3 steps" in lab_status and "Step 3 of 3" in equation
            client.close()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def remote(tiny_ddpm_dir: Path, tiny_sd_dir: Path):
    """The Ray-backed Studio; this process runs torch on 1 thread meanwhile, as each replica does (a float
    sum split over 2 threads may round differently: 1 pixel of 768 differed by 1 in a predicted x0)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dirs = (str(tiny_ddpm_dir), str(tiny_sd_dir))
    registry = Registry.default([Path(d) for d in dirs])
    studio = ray_studio(registry, OPTIONS, StudioSettings(dirs, "cpu", "fp32", cache_bytes=0),
                       device="cpu", precision="fp32", cache_bytes=0)
    yield studio
    shutdown()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_images_and_streams_equal_the_local_backend(remote, studio) -> None:
    for model_id, request in (("local/tiny-ddpm", SampleRequest("ddpm", 6, 3, 11)),
                              ("local/tiny-sd", SampleRequest("ddim", 5, 2, 4, prompt="a red circle",
                                                              guidance_scale=3.0))):
        there = list(remote.generate(model_id, request, previews=5))
        here = list(studio.generate(model_id, request, previews=5))
        assert [u.step for u in there] == [u.step for u in here]  # every step streams back
        assert any(u.preview is not None for u in there[:-1]) and there[-1].done
        np.testing.assert_array_equal(there[-1].images, here[-1].images)
        for a, b in zip(there, here, strict=True):
            assert (a.preview is None) == (b.preview is None)
            if a.preview is not None:
                np.testing.assert_array_equal(a.preview, b.preview)


def test_step_lab_race_sdedit_and_guidance_equal_the_local_backend(remote, studio) -> None:
    request = SampleRequest("ddim", 4, 1, 7, prompt="a red circle", guidance_scale=3.0)
    seen = [done for done, _, _ in remote.trajectory("local/tiny-sd", request)]
    assert seen == [1, 2, 3, 4]  # streamed step by step
    *_, (_, _, there) = remote.trajectory("local/tiny-sd", request)
    *_, (_, _, here) = studio.trajectory("local/tiny-sd", request)
    assert len(there.steps) == len(here.steps) == 4 and there.tokens == here.tokens
    np.testing.assert_array_equal(there.final, here.final)
    for a, b in zip(there.steps, here.steps, strict=True):
        assert a.alpha_prod_t_prev == b.alpha_prod_t_prev
        np.testing.assert_array_equal(a.pred_x0, b.pred_x0)
        for key in b.attention:
            np.testing.assert_array_equal(a.attention[key], b.attention[key])
    np.testing.assert_array_equal(next(remote.guidance_view("local/tiny-sd", there.steps[1])).pred_x0[0],
                                  next(studio.guidance_view("local/tiny-sd", here.steps[1])).pred_x0[0])
    lanes = (("ddim", 3), ("ddpm", 5))
    *_, far = remote.race("local/tiny-ddpm", SampleRequest(seed=3), lanes)
    *_, near = studio.race("local/tiny-ddpm", SampleRequest(seed=3), lanes)
    for a, b in zip(far, near, strict=True):
        assert a.alpha_prod == b.alpha_prod and len(a.pred_x0) == len(b.pred_x0) == a.steps
        np.testing.assert_array_equal(a.final, b.final)
    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    sdedit = SampleRequest("ddim", 5, 1, 2, prompt="a star", guidance_scale=2.0)
    *_, far_img = remote.generate("local/tiny-sd", sdedit, 0, image, 60)
    *_, near_img = studio.generate("local/tiny-sd", sdedit, 0, image, 60)
    np.testing.assert_array_equal(far_img.images, near_img.images)


def test_bad_requests_keep_their_readable_message(remote) -> None:
    with pytest.raises(ValueError, match="Steps must be a whole number"):
        list(remote.generate("local/tiny-ddpm", SampleRequest("ddim", 0, 1, 0)))
    with pytest.raises(ValueError, match="unknown model"):
        list(remote.generate("no/such-model", SampleRequest()))


def _replica_actors() -> list:
    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "StudioReplica" in a["name"]]
    return [ray.get_actor(a["name"], namespace=a["namespace"]) for a in names]


def test_a_killed_replica_fails_its_request_clearly_and_is_replaced(remote, studio) -> None:
    # a long tiny run: 16 images, 99 steps, guidance, a decoded preview every step (seconds)
    long = SampleRequest("ddpm", 99, 16, 1, prompt="a red circle", guidance_scale=3.0)
    began = time.monotonic()
    *_, = studio.generate("local/tiny-sd", long, previews=100)
    print(f"the long request alone: {time.monotonic() - began:.1f} s")  # noqa: T201
    stream = remote.generate("local/tiny-sd", long, previews=100)
    first = next(stream)  # the run has started on a replica
    assert not first.done
    actors = _replica_actors()
    assert len(actors) == 2
    for actor in actors:  # whichever one runs it
        ray.kill(actor, no_restart=True)
    began = time.monotonic()
    with pytest.raises(BackendError, match="Press the button again"):
        for update in stream:
            assert not update.done, "the request ended before its replica was stopped: make it longer"
    assert time.monotonic() - began < 60  # an error, never a hang
    deadline, failures = time.monotonic() + 120, 0
    while True:  # Serve starts new replicas; the next requests succeed
        try:
            *_, final = remote.generate("local/tiny-ddpm", SampleRequest("ddim", 2, 1, 0), previews=0)
            break
        except BackendError:
            failures += 1
            assert time.monotonic() < deadline, "the replicas were not replaced within 120 s"
            time.sleep(1)
    assert final.images.shape[0] == 1
    print(f"requests that failed while Serve replaced the replicas: {failures}")  # noqa: T201


@pytest.mark.slow
def test_an_unreachable_cluster_is_named() -> None:
    began = time.monotonic()
    with pytest.raises(BackendError, match="--ray-address 127.0.0.1:1"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(BackendError, match="HOST:PORT"):
        check_reachable("nonsense")
    assert time.monotonic() - began < 15
    result = subprocess.run([sys.executable, "app.py", "--backend", "ray", "--ray-address", "127.0.0.1:1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "cannot reach the Ray cluster at --ray-address 127.0.0.1:1" in result.stderr.splitlines()[-1]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--replicas"):
        RayOptions(replicas=0)
    with pytest.raises(ValueError, match="--replica-cpus"):
        dataclasses.replace(OPTIONS, replica_cpus=0)


def test_replicas_that_stop_answering_give_a_message_not_a_hang(remote) -> None:
    """A lost cluster or a frozen node, as the app sees it: no update comes. The replicas are frozen with
    SIGSTOP; the request fails with a message once ``stall_s`` passes without an update."""
    import os
    import signal

    from diffusion.ray_backend import replica_pids

    pids = replica_pids(remote.backend.handle, 2)
    options = remote.backend.options
    remote.backend.options = dataclasses.replace(options, stall_s=3)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    try:
        with pytest.raises(BackendError, match="No answer from the model servers for 3 s"):
            list(remote.generate("local/tiny-ddpm", SampleRequest("ddim", 2, 1, 0)))
        assert time.monotonic() - began < 30
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        remote.backend.options = options
    *_, final = remote.generate("local/tiny-ddpm", SampleRequest("ddim", 2, 1, 0))  # thawed: served again
    assert final.done


def test_a_hub_model_is_routed_to_the_replica_that_holds_it(remote) -> None:
    """Models that are not embedded (here the tiny --model-dir ones) go through Serve's model multiplexing: a
    replica loads one at a time, and the requests that name it go to the replica that holds it."""
    from diffusion.request import SampleRequest

    remote.sample("local/tiny-ddpm", SampleRequest("ddim", 2, n=1, seed=1))
    routed = remote.backend.handle.options(multiplexed_model_id="local/tiny-ddpm")
    deadline = time.monotonic() + 30
    while True:  # Serve learns which replica holds which model from the replicas' periodic reports
        answers = [routed.loaded.remote().result(timeout_s=30) for _ in range(6)]
        holders = {(pid, tuple(ids)) for pid, ids in answers}
        if len(holders) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(holders) == 1, holders
    (pid, ids), = holders
    assert "local/tiny-ddpm" in ids
    # the other model: loaded through the multiplexed loader too, at most one such model per replica
    remote.sample("local/tiny-sd", SampleRequest("ddim", 2, n=1, seed=2, prompt="a red circle", guidance_scale=2.0))
    for pid, ids in [remote.backend.handle.loaded.remote().result(timeout_s=30) for _ in range(8)]:
        assert len([i for i in ids if i.startswith("local/")]) <= 1, (pid, ids)
