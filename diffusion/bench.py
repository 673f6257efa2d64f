"""Benchmarks: our loop against diffusers' pipelines, the embedded models' speed and quality
against cost, compute efficiency against the machine's matmul peak, precision / layout
variants, and the app's cold start and peak memory (those in :mod:`diffusion.bench_app`).

    python -m diffusion.bench            # the full suite (tens of minutes on a 2-core CPU)
    python -m diffusion.bench --quick    # a short version (a few minutes)

Every time is the median of ``--repeats`` runs; the runs of a comparison are interleaved
(ours, theirs, ours, theirs, ...) so that a noisy machine biases neither side. The result is a
Markdown table on stdout (and in ``--out``), headed by the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffusion.images import to_uint8
from diffusion.loading import (
    LatentTextModel,
    LoadedModel,
    PixelModel,
    cpu_has_native_bf16,
    load_pipeline,
)
from diffusion.pipeline import decode_latents, latent_steps, pixel_steps
from diffusion.registry import Registry
from diffusion.request import SampleRequest
from diffusion.schedulers import make_scheduler

logger = logging.getLogger("diffusion.bench")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the table; ``data`` keeps the raw figures (seconds, ratios, differences)."""

    section: str
    name: str
    value: str
    note: str = ""
    data: dict[str, float] = field(default_factory=dict)


def median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function, runs interleaved; one untimed warm-up each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {torch.get_num_threads()} torch threads, {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


# ----- 1. parity -----
def ours_pixel(model: PixelModel, request: SampleRequest, record: bool = False) -> torch.Tensor:
    """Our loop; with ``record`` the whole trajectory (x_t, eps, x0 per step) is kept."""
    kept = []
    for step in pixel_steps(model.unet, model.scheduler_config, request, autocast_dtype=model.autocast_dtype):
        if record:
            kept.append((step.sample, step.model_output, step.pred_original_sample))
        last = step
    return last.prev_sample


def diffusers_pixel(model: PixelModel, request: SampleRequest) -> np.ndarray:
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline(unet=model.unet, scheduler=make_scheduler("ddim", model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return pipe(batch_size=request.n, generator=torch.Generator("cpu").manual_seed(request.seed),
                    num_inference_steps=request.steps, eta=0.0, output_type="np").images


def ours_latent(model: LatentTextModel, request: SampleRequest, record: bool = False) -> torch.Tensor:
    kept = []
    for step in latent_steps(model, request):
        if record:
            kept.append((step.sample, step.model_output, step.pred_original_sample))
        last = step
    return decode_latents(model, last.prev_sample)


def diffusers_latent(model: LatentTextModel, request: SampleRequest) -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=make_scheduler("ddim", model.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size = model.card.resolution
    with torch.inference_mode():
        return pipe(request.prompt, negative_prompt=request.negative_prompt or None, height=size, width=size,
                    num_images_per_prompt=request.n, num_inference_steps=request.steps,
                    guidance_scale=request.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np").images


def bench_parity(pixel: PixelModel, latent: LatentTextModel | None, repeats: int, n: int = 16,
                 steps: int = 25, latent_n: int = 4) -> list[Row]:
    """Same weights, scheduler and seed: our loop and diffusers' pipeline call, images and times."""
    rows = []
    request = SampleRequest(sampler="ddim", steps=steps, n=n, seed=0)
    ours = ((ours_pixel(pixel, request) / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy()
    diff = float(np.abs(ours - diffusers_pixel(pixel, request)).max())
    t = median_times({"ours": lambda: ours_pixel(pixel, request),
                      "recorded": lambda: ours_pixel(pixel, request, record=True),
                      "diffusers": lambda: diffusers_pixel(pixel, request)}, repeats)
    name = f"{pixel.card.id}, {n} images, DDIM {steps}"
    rows += [Row("Our loop vs diffusers", f"{name}: DDIMPipeline", f"{t['diffusers']:.3f} s"),
             Row("Our loop vs diffusers", f"{name}: ours", f"{t['ours']:.3f} s",
                 f"ratio {t['ours'] / t['diffusers']:.3f} (aim <= 1.05); max |diff| {diff:.1e}",
                 {"ratio": t["ours"] / t["diffusers"], "max_abs_diff": diff}),
             Row("Our loop vs diffusers", f"{name}: ours, trajectory recorded", f"{t['recorded']:.3f} s",
                 f"ratio {t['recorded'] / t['diffusers']:.3f} (aim <= 1.15)")]
    if latent is not None:
        request = SampleRequest(sampler="ddim", steps=steps, n=latent_n, seed=0, guidance_scale=4.0,
                                prompt="a large red circle in the top left corner")
        ours = ((ours_latent(latent, request) / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy()
        diff = float(np.abs(ours - diffusers_latent(latent, request)).max())
        t = median_times({"ours": lambda: ours_latent(latent, request),
                          "recorded": lambda: ours_latent(latent, request, record=True),
                          "diffusers": lambda: diffusers_latent(latent, request)}, repeats)
        name = f"{latent.card.id}, {latent_n} images, DDIM {steps}, guidance 4"
        rows += [Row("Our loop vs diffusers", f"{name}: StableDiffusionPipeline", f"{t['diffusers']:.3f} s"),
                 Row("Our loop vs diffusers", f"{name}: ours", f"{t['ours']:.3f} s",
                     f"ratio {t['ours'] / t['diffusers']:.3f} (aim <= 1.05; 4 images aim < 2 s); "
                     f"max |diff| {diff:.1e}", {"ratio": t["ours"] / t["diffusers"], "max_abs_diff": diff}),
                 Row("Our loop vs diffusers", f"{name}: ours, trajectory recorded", f"{t['recorded']:.3f} s",
                     f"ratio {t['recorded'] / t['diffusers']:.3f} (aim <= 1.15)")]
    return rows


# ----- 2. speed -----
def bench_speed(pixel: PixelModel, latent: LatentTextModel | None, repeats: int, quick: bool) -> list[Row]:
    """The embedded models' sampling time in fp32 and in bf16 autocast (the default where the CPU
    has native bf16), each pair interleaved."""
    precisions = {"fp32": None}
    if cpu_has_native_bf16():
        precisions["bf16 autocast (default)"] = torch.bfloat16
    rows = []
    cases: list[tuple[str, SampleRequest, str, LoadedModel]] = [
        ("DDIM 25, 16 images", SampleRequest("ddim", 25, 16, 0), "aim < 1.5 s", pixel),
        ("DPM-Solver++ 2M 20, 16 images", SampleRequest("dpmpp-2m", 20, 16, 0), "", pixel)]
    if not quick:
        cases.append(("DDPM 1000, 16 images", SampleRequest("ddpm", 1000, 16, 0), "one run", pixel))
    if latent is not None:
        cases.append(("ldm-shapes DDIM 25, 4 images, guidance 4",
                      SampleRequest("ddim", 25, 4, 0, prompt="a large red circle in the top left corner",
                                    guidance_scale=4.0), "", latent))
    for name, request, aim, model in cases:
        runs = 1 if request.steps >= 1000 else repeats
        variants = {label: dataclasses.replace(model, autocast_dtype=dtype) for label, dtype in precisions.items()}
        sample = ours_pixel if isinstance(model, PixelModel) else ours_latent
        times = median_times({label: (lambda m=m, r=request: sample(m, r)) for label, m in variants.items()},
                             runs, warmup=0 if runs == 1 else 1)
        section = "Embedded DDPM speed" if isinstance(model, PixelModel) else "Embedded LDM speed"
        for label, t in times.items():
            per = t / request.steps * 1000
            note = f"{per:.1f} ms per batched step; {times['fp32'] / t:.2f}x fp32; {aim}".strip("; ")
            rows.append(Row(section, f"{name}, {label}", f"{t:.3f} s", note, data={"seconds": t}))
    return rows


# ----- 3. quality vs cost -----
def sample_images(pixel: PixelModel, sampler: str, steps: int, n: int, batch: int = 100,
                  context=nullcontext) -> np.ndarray:
    out = []
    for b, start in enumerate(range(0, n, batch)):
        request = SampleRequest(sampler=sampler, steps=steps, n=min(batch, n - start), seed=b)
        with context():
            out.append(to_uint8(ours_pixel(pixel, request).float()))
    return np.concatenate(out)


def bench_quality(pixel: PixelModel, n: int, n_ddpm: int) -> list[Row]:
    from diffusion.metrics.mnist_gate import evaluate

    rows = []
    configs = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("dpmpp-2m", 10), ("dpmpp-2m", 20)]
    if n_ddpm:
        configs.append(("ddpm", 1000))
    for sampler, steps in tqdm(configs, desc="FLD vs steps", leave=False):
        count = n_ddpm if sampler == "ddpm" else n
        start = time.perf_counter()
        images = sample_images(pixel, sampler, steps, count)
        wall = time.perf_counter() - start
        report = evaluate(images)
        rows.append(Row("Quality vs cost (FLD, lower is better)", f"{sampler} {steps} steps, n={count}",
                        f"FLD {report.fld:.2f}",
                        f"floor {report.fld_floor:.2f} (ratio {report.fld_ratio:.2f}); confident "
                        f"{report.confident_share:.2f}; {wall / count * 1000:.0f} ms per image"))
    return rows


# ----- 4. efficiency -----
def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Measured matrix-multiply throughput in GFLOP/s (median of repeats)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    t = median_times({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 2 * size**3 / t / 1e9


def unet_flops(pixel: PixelModel) -> int:
    """Forward FLOPs of one image-step, counted by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    size = pixel.unet.config.sample_size
    x = torch.randn(1, pixel.unet.config.in_channels, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pixel.unet(x, torch.tensor([500]))
    return int(counter.get_total_flops())


def bench_efficiency(pixel: PixelModel, repeats: int) -> tuple[list[Row], dict[str, float]]:
    flops = unet_flops(pixel)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    request = SampleRequest("ddim", 25, 16, 0)
    t = median_times({"x": lambda: ours_pixel(pixel, request)}, repeats)["x"]
    achieved = flops * request.n * request.steps / t / 1e9
    rows = [Row("Compute efficiency", "UNet forward FLOPs per image-step", f"{flops / 1e6:.1f} MFLOP"),
            Row("Compute efficiency", "matmul peak fp32 (2048^2)", f"{peaks['fp32']:.0f} GFLOP/s"),
            Row("Compute efficiency", "matmul peak bf16 (2048^2)", f"{peaks['bf16']:.0f} GFLOP/s"),
            Row("Compute efficiency", "achieved, DDIM 25 x 16 images fp32", f"{achieved:.1f} GFLOP/s",
                f"{achieved / peaks['fp32']:.0%} of the fp32 matmul peak")]
    return rows, peaks


# ----- 5. variants -----
def bench_variants(pixel: PixelModel, repeats: int, n_fld: int, compile_too: bool) -> list[Row]:
    from diffusion.metrics.mnist_gate import evaluate

    request = SampleRequest("ddim", 25, 16, 0)
    unet = pixel.unet
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731 - a context factory
    variants: dict[str, tuple[Callable[[], object], Callable]] = {
        "fp32": (lambda: ours_pixel(pixel, request), nullcontext),
        "bf16 autocast": (lambda: _with(bf16, lambda: ours_pixel(pixel, request)), bf16),
    }
    cl_model = PixelModel(pixel.card, _channels_last_copy(unet), pixel.scheduler_config, pixel.device, pixel.dtype)
    variants["channels_last"] = (lambda: ours_pixel(cl_model, request), nullcontext)
    if compile_too:
        compiled = PixelModel(pixel.card, torch.compile(unet), pixel.scheduler_config, pixel.device, pixel.dtype)
        start = time.perf_counter()
        ours_pixel(compiled, request)
        logger.info("torch.compile warm-up %.0f s", time.perf_counter() - start)
        variants["torch.compile"] = (lambda: ours_pixel(compiled, request), nullcontext)
    times = median_times({k: v[0] for k, v in variants.items()}, repeats)
    rows = []
    for name, (_, context) in variants.items():
        model = {"channels_last": cl_model}.get(name, pixel)
        if name == "torch.compile":
            model = compiled
        fld = evaluate(sample_images(model, "ddim", 25, n_fld, context=context)).fld if n_fld else float("nan")
        rows.append(Row("Precision and layout (DDIM 25, 16 images)", name, f"{times[name]:.3f} s",
                        f"speed-up {times['fp32'] / times[name]:.2f}x; FLD {fld:.2f} (n={n_fld})"))
    return rows


def _with(context: Callable, fn: Callable[[], object]) -> object:
    with context():
        return fn()


def _channels_last_copy(unet: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(unet).to(memory_format=torch.channels_last)


# ----- main -----
def parser() -> argparse.ArgumentParser:
    """The command line of ``diffusion-classroom-bench`` (``python -m diffusion.bench``)."""
    from diffusion import __version__

    p = argparse.ArgumentParser(prog="diffusion-classroom-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--quick", action="store_true", help="fewer repeats and samples; no DDPM-1000")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5, quick 3)")
    p.add_argument("--fld-n", type=int, default=None, help="samples per FLD figure (default 500, quick 100)")
    p.add_argument("--ddpm-n", type=int, default=None, help="samples for DDPM-1000's FLD (default 100, quick 0)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow warm-up)")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["parity", "speed", "quality", "efficiency", "variants", "cold-start", "memory", "playground"],
                   help="sections to leave out")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: the cores this process may use, as in the app)")
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    """The console script ``diffusion-classroom-bench``."""
    return main(parse_args(argv))


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from diffusion.threads import configure_threads

    configure_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    n_fld = args.fld_n if args.fld_n is not None else (100 if args.quick else 500)
    n_ddpm = args.ddpm_n if args.ddpm_n is not None else (0 if args.quick else 100)
    registry = Registry.default()
    device = torch.device("cpu")
    pixel = load_pipeline(registry.get("ddpm-mnist"), device)
    latent = None
    if "ldm-shapes" in registry.cards and (Path(registry.get("ldm-shapes").source) / "model_index.json").is_file():
        latent = load_pipeline(registry.get("ldm-shapes"), device)
    from diffusion.bench_app import bench_cold_start, bench_memory, bench_playground

    sections = [
        ("parity", lambda: bench_parity(pixel, latent, repeats)),
        ("speed", lambda: bench_speed(pixel, latent, repeats, args.quick)),
        ("quality", lambda: bench_quality(pixel, n_fld, n_ddpm)),
        ("efficiency", lambda: bench_efficiency(pixel, repeats)[0]),
        ("variants", lambda: bench_variants(pixel, repeats, n_fld, args.compile)),
        ("cold-start", lambda: bench_cold_start(latent is not None)),
        ("memory", lambda: bench_memory(latent is not None, args.quick, args.threads)),
        ("playground", lambda: bench_playground()),
    ]
    rows: list[Row] = []
    started = time.perf_counter()
    for name, fn in tqdm([s for s in sections if s[0] not in args.skip], desc="benchmarks", unit="section"):
        rows += fn()
    table = render_table(rows, time.perf_counter() - started, args)
    sys.stdout.write(table + "\n")
    if args.out:
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0


def render_table(rows: list[Row], wall_s: float, args: argparse.Namespace) -> str:
    flags = " ".join(a for a in sys.argv[1:]) or "(defaults)"
    lines = [f"Machine: {machine()}", "",
             f"`python -m diffusion.bench {flags}` — {time.strftime('%Y-%m-%d')}, {wall_s / 60:.1f} min", "",
             "| Section | Measurement | Value | Notes |", "|---|---|---|---|"]
    lines += [f"| {r.section} | {r.name} | {r.value} | {r.note} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
