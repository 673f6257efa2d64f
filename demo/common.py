"""Shared UI pieces: LaTeX delimiters, input checks, the model concurrency group."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from diffusion.loading import ModelLoadError
from diffusion.pipeline import MAX_SEED

# All model events share one concurrency group: on a 2-core CPU one model run at a time.
MODEL_CONCURRENCY = {"concurrency_id": "model", "concurrency_limit": 1}

LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]


def as_int(value: object, name: str, lo: int, hi: int) -> int:
    """Validate an integer input from the UI or the API; raise ``gr.Error`` with the bounds."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number between {lo} and {hi}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or not lo <= int(number) <= hi:
        raise gr.Error(f"{name} must be a whole number between {lo} and {hi}, got {value!r}")
    return int(number)


def as_float(value: object, name: str, lo: float, hi: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number between {lo} and {hi}, got {value!r}") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise gr.Error(f"{name} must be a number between {lo} and {hi}, got {value!r}")
    return number


def as_seed(value: object) -> int:
    return as_int(value, "Seed", 0, MAX_SEED)


def random_seed() -> int:
    """A fresh seed in [0, 2^32 - 1]."""
    return secrets.randbelow(MAX_SEED + 1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the model module's readable errors into ``gr.Error`` messages for the user."""
    try:
        yield
    except (ValueError, KeyError, ModelLoadError, FloatingPointError) as error:
        message = error.args[0] if error.args else str(error)
        raise gr.Error(str(message)) from error


def status_line(step: int, num_steps: int, wall_s: float, model_calls: int, n: int) -> str:
    rate = f", {wall_s / max(1, model_calls) * 1000:.0f} ms per step" if model_calls else ""
    return (f"**Step {step}/{num_steps}** · {n} image{'s' if n != 1 else ''} · {model_calls} UNet calls · "
            f"{wall_s:.2f} s{rate}")
