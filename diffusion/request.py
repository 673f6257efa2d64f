"""A sampling request, its bounds, and the one place where a request is checked.

The bounds are named here once: the Studio checks every request against them (and against the
model's own number of training timesteps), and the UI's sliders read the same constants. Values
from a form or an API call arrive as floats ("4.0" steps); :func:`check_request` turns whole
numbers into ints and refuses anything else with one readable ``ValueError`` that names the field
and its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from diffusion.layout import LAYOUT_MODES
from diffusion.schedulers import get_sampler

MAX_SEED = 2**32 - 1  # the seed of a CPU torch.Generator, as diffusers' pipelines take it
MAX_STEPS = 1000  # the most denoising steps of any run (a model allows at most its training timesteps)
MAX_BATCH = 64  # images per request in the app (the CLI runs more in batches of this size)
MAX_IMAGES = 100_000  # images of one command-line run, in batches (an evaluation set)
MAX_GUIDANCE = 30.0  # classifier-free guidance scale w (Ho & Salimans 2022, Eq. 6 with their w + 1, as diffusers)
MAX_PROMPT_CHARS = 2000
MAX_LAB_IMAGES = 16  # images the step lab records side by side in one run
MAX_TEXT_BATCH = 16  # images per text-to-image request in the app (latent models cost more per image)


@dataclass(frozen=True)
class SampleRequest:
    """Everything that determines a set of images (with the model's weights).

    ``seed`` in [0, 2^32 - 1]; ``steps`` in [1, num_train_timesteps]; ``n`` images; ``eta`` in
    [0, 1] (DDIM only); ``guidance_scale`` in [0, 30] (text models; 1 means no guidance). A request
    built from form values may hold whole floats; :func:`check_request` returns the checked one.
    ``attend_excite``: nudge the first steps' latents so that every object word is attended to
    (text models; :mod:`diffusion.excite`). ``layout``: "auto" draws a prompt that names two objects by a
    planned layout, one region per object (text models; :mod:`diffusion.layout`; not with Attend-and-Excite,
    which edits the plain prompt's attention); "off" is the plain model.
    """

    sampler: str = "ddim"
    steps: int = 50
    n: int = 16
    seed: int = 0
    eta: float = 0.0
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 1.0
    attend_excite: bool = False
    layout: str = "auto"


def _number(value: object, message: str, lo: float, hi: float, whole: bool) -> float:
    """``value`` as a finite float in [lo, hi] (a whole one when ``whole``), else ``ValueError(message)``.
    Booleans are not numbers."""
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(message) from None
    if not math.isfinite(number) or (whole and number != int(number)) or not lo <= number <= hi:
        raise ValueError(message)
    return number


def whole_number(value: object, name: str, lo: int, hi: int) -> int:
    """``value`` as an int in [lo, hi] (whole floats such as 4.0 are accepted), else ``ValueError``."""
    number = _number(value, f"{name} must be a whole number between {lo} and {hi}, got {value!r}", lo, hi, True)
    return int(value) if isinstance(value, int) else int(number)  # large ints stay exact


def real_number(value: object, name: str, lo: float, hi: float) -> float:
    """``value`` as a finite float in [lo, hi], else ``ValueError``."""
    return _number(value, f"{name} must be a number between {lo:g} and {hi:g}, got {value!r}", lo, hi, False)


def check_request(request: SampleRequest, max_steps: int = MAX_STEPS, max_batch: int = MAX_BATCH,
                  conditional: bool = True, model_id: str = "this model") -> SampleRequest:
    """The checked request, with ints where the fields are whole numbers; ``ValueError`` names the first
    field out of range. ``max_steps`` is the model's number of training timesteps; ``conditional`` False
    (unconditional pixel models) refuses prompts."""
    sampler = request.sampler if isinstance(request.sampler, str) else repr(request.sampler)
    get_sampler(sampler)
    for name, prompt in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        if not isinstance(prompt, str):
            raise ValueError(f"the {name} must be text, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompts are limited to {MAX_PROMPT_CHARS} characters")
    if not conditional and (request.prompt or request.negative_prompt):
        raise ValueError(f"{model_id} is unconditional: it takes no prompt")
    if not isinstance(request.attend_excite, bool):
        raise ValueError(f"attend_excite must be true or false, got {request.attend_excite!r}")
    if request.attend_excite and not conditional:
        raise ValueError(f"{model_id} is unconditional: Attend-and-Excite needs a prompt's words")
    if request.layout not in LAYOUT_MODES:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_MODES)}, got {str(request.layout)[:40]!r}")
    return replace(
        request,
        steps=whole_number(request.steps, "Steps", 1, min(max_steps, MAX_STEPS)),
        n=whole_number(request.n, "Batch", 1, max_batch),
        seed=whole_number(request.seed, "Seed", 0, MAX_SEED),
        eta=real_number(request.eta, "eta", 0.0, 1.0),
        guidance_scale=real_number(request.guidance_scale, "Guidance scale", 0.0, MAX_GUIDANCE),
    )


def in_batches(request: SampleRequest, batch_size: int = MAX_BATCH, max_batch: int = MAX_BATCH) -> list[SampleRequest]:
    """``request`` for ``request.n`` images as consecutive requests of at most ``batch_size`` images:
    batch b has seed ``seed + b`` (mod 2^32), so a long run is the same as its batches run one by one."""
    n = whole_number(request.n, "Number of images", 1, MAX_IMAGES)
    size = whole_number(batch_size, "Batch size", 1, max_batch)
    seed = whole_number(request.seed, "Seed", 0, MAX_SEED)
    return [replace(request, n=min(size, n - start), seed=(seed + b) % (MAX_SEED + 1))
            for b, start in enumerate(range(0, n, size))]


def make_generator(seed: int) -> torch.Generator:
    """The request's only source of randomness: a CPU generator (same seed, same image)."""
    return torch.Generator("cpu").manual_seed(whole_number(seed, "Seed", 0, MAX_SEED))
