"""Benchmarks of the app as a whole, for ``python -m diffusion.bench``: its cold start and peak memory, what a
step-lab recording costs in memory, and the playground's training speed."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffusion.bench import ROOT, Row
from diffusion.registry import Registry
from diffusion.request import SampleRequest


# ----- 6. cold start -----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_cold_start(latent_available: bool) -> list[Row]:
    """Start ``python app.py``; time to the first image served; peak RSS with every embedded model loaded."""
    from gradio_client import Client

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "demo.launch", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        while client is None:
            if proc.poll() is not None:
                raise RuntimeError("the app exited during start-up")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        up = time.perf_counter() - start
        client.predict("ddpm-mnist", "ddim", 25, 0.0, 1, 0, api_name="/sample")
        first = time.perf_counter() - start
        if latent_available:
            client.predict("ldm-shapes", "a red circle", "", 4.0, "ddim", 25, 0, 1, api_name="/text_to_image")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return [Row("Cold start and memory", "process start -> server up", f"{up:.1f} s"),
            Row("Cold start and memory", "process start -> first image (ddpm-mnist, DDIM 25, 1 image)", f"{first:.1f} s"),
            Row("Cold start and memory", "peak RSS, all embedded models loaded and used", f"{peak_kb / 1024:.0f} MiB")]


# ----- 7. recording memory -----
def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def measure_recording(model_id: str, sampler: str, steps: int, images: int, prompt: str,
                      threads: int = 0, local_dirs: tuple[str, ...] = ()) -> dict[str, float]:
    """In a fresh process: extra peak RSS and kept bytes of one step-lab recording.

    The model is loaded and a short run made first; then the peak-RSS counter is reset
    (``/proc/self/clear_refs``) and the recording runs. Returns MiB and seconds.
    """
    import gc

    from diffusion.lab.trajectory import trajectory_nbytes
    from diffusion.studio import Studio

    if threads:
        torch.set_num_threads(threads)
    studio = Studio(Registry.default([Path(d) for d in local_dirs]), device="cpu")
    request = SampleRequest(sampler, steps, 1, 0, prompt=prompt, guidance_scale=4.0 if prompt else 1.0)
    for _ in studio.trajectory(model_id, dataclasses.replace(request, steps=2), images=images):
        pass
    gc.collect()
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    for _, _, traj in studio.trajectory(model_id, request, images=images):
        pass
    wall = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"extra_peak_mib": (peak - baseline) / 1024, "kept_mib": trajectory_nbytes(traj) / 2**20,
            "wall_s": wall, "attention": float(traj.steps[-1].attention is not None)}


def bench_memory(latent_available: bool, quick: bool, threads: int) -> list[Row]:
    """What a step-lab recording costs in memory, each measured in its own process."""
    import multiprocessing

    cases = [("ddpm-mnist", "ddpm", 250 if quick else 1000, 16, "")]
    if latent_available:
        cases.append(("ldm-shapes", "ddim", 50, 1, "a large red circle in the top left corner"))
    rows = []
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for model_id, sampler, steps, images, prompt in cases:
            m = pool.apply(measure_recording, (model_id, sampler, steps, images, prompt, threads))
            what = f"{model_id}, {sampler} {steps} steps, {images} image{'s' * (images > 1)}"
            if m["attention"]:
                what += ", with cross-attention maps"
            rows.append(Row("Step-lab recording memory", what, f"{m['extra_peak_mib']:.0f} MiB extra peak RSS",
                            f"arrays kept {m['kept_mib']:.1f} MiB; {m['wall_s']:.1f} s", data=m))
    return rows


# ----- the playground -----
def bench_playground(steps: int | None = None, measure_every: int = 100) -> list[Row]:
    """Algorithm 1 on two moons at the default config: training steps per second (sampling and measuring
    excluded), the training time until the distance first reaches 2x the data floor (measured every
    ``measure_every`` steps), and the distance at the end of the default budget."""
    from dataclasses import replace

    from diffusion.playground.training import PointConfig, noise_floor, train_points

    config = PointConfig() if steps is None else replace(PointConfig(), steps=steps)
    floor = noise_floor(config)
    target_step = target_train_s = target_wall_s = None
    for update in train_points(config, preview_every=10**9, measure_every=measure_every, snapshots=()):
        if update.distance is not None and target_step is None and update.distance <= 2 * floor:
            target_step, target_train_s, target_wall_s = update.step, update.wall_s - update.measure_s, update.wall_s
    model = update.model
    assert model is not None
    train_s = update.wall_s - update.measure_s
    rate = config.steps / train_s
    data = {"steps_per_s": rate, "train_s": train_s, "distance": model.distance, "floor": floor,
            "ratio": model.distance / floor}
    reached = (f"step {target_step}: {target_train_s:.1f} s of training ({target_wall_s:.1f} s with the "
               f"{measure_every}-step measurements)" if target_step else "not reached")
    if target_step:
        data.update(target_step=target_step, target_train_s=target_train_s)
    return [
        Row("Playground", f"Algorithm 1 on two moons (MLP {model.config.hidden}x{model.config.layers}, batch "
            f"{config.batch_size})", f"{rate:.0f} steps/s", f"{config.steps} steps in {train_s:.1f} s", data=data),
        Row("Playground", "time to 2x the data floor (sliced Wasserstein, DDPM 100 steps, 2,000 points)", reached,
            f"floor {floor:.4f}"),
        Row("Playground", f"distance after the default budget ({config.steps} steps)",
            f"{model.distance:.4f} ({model.distance / floor:.2f}x the floor)", "target: at most 2x"),
    ]
