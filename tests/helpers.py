"""Helpers the tests share: pictures, PNG bombs, process memory and CPU readings, the model thread settling."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def settled_steps(studio, quiet_s: float = 0.5, timeout_s: float = 30) -> int:
    """Wait until no denoising step runs (the steps in flight of cancelled jobs end), then ``quiet_s`` more;
    returns the number of gate steps run so far."""
    import time

    deadline = time.monotonic() + timeout_s
    while studio.gate.active and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(quiet_s)
    return studio.gate.steps_run


def load(result) -> np.ndarray:  # noqa: ANN001 - a gradio_client result: a path, or a dict with one
    """A picture the API returned, as an array."""
    path = result["path"] if isinstance(result, dict) else result
    return np.asarray(Image.open(path))


def bomb_png(side: int) -> bytes:
    """A black 8-bit grayscale PNG of side x side pixels, built row by row (never held decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one zero byte per pixel
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def card_metrics(folder: Path, record: dict) -> list:
    """The model-index rows (``diffusion.metrics.cards.CardMetric``) of a gated model folder's card."""
    if folder.name == "ddpm-mnist":
        from diffusion.metrics.mnist_gate import CARD_METRICS
    elif folder.name == "planner-mazes":
        from diffusion.metrics.planner_gate import card_metrics as planner_metrics

        return planner_metrics(record)
    else:
        from diffusion.metrics.shapes_gate import CARD_METRICS
    return list(CARD_METRICS)
