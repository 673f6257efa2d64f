"""What one request may ask for in estimated compute (a Space sets a budget; ``--work-budget-s``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from diffusion.layout import unet_rows
from diffusion.pipeline import request_layouts
from diffusion.registry import ModelCard
from diffusion.request import SampleRequest

#: Attend-and-Excite's cost per edited step in UNet passes of one image: a forward and a backward pass (about
#: two forwards) on the conditional prompt, and a forward that measures the result (diffusion.excite).
EXCITE_PASSES = 4


def request_seconds(card: ModelCard, request: SampleRequest) -> float:
    """Estimated compute of a checked request on ``card``'s model: images x UNet rows x the card's cost per
    image-step (x2 with guidance, one trajectory per object when drawn by layout, plus Attend-and-Excite's extra
    passes on the steps it edits)."""
    guided = 2 if card.kind == "latent-text" and request.guidance_scale > 1 else 1
    rows = request.steps * guided
    if card.kind == "latent-text" and any(request_layouts(replace(request, n=1))):
        rows = unet_rows(request.steps, guided == 2)  # one trajectory per object (diffusion.layout)
    excite = EXCITE_PASSES * max(1, request.steps // 2) if request.attend_excite else 0
    return request.n * (rows + excite) * card.image_step_ms / 1000


def check_work_budget(card: ModelCard, requests: Sequence[SampleRequest], budget_s: float | None) -> None:
    """``ValueError`` saying what fits when ``requests`` together need more than ``budget_s`` seconds of estimated
    compute (None: no budget)."""
    if budget_s is None:
        return
    need = sum(request_seconds(card, r) for r in requests)
    if need <= budget_s:
        return
    first = requests[0]
    per_image_step = request_seconds(card, replace(first, n=1, steps=1))
    images = int(budget_s / (first.steps * per_image_step) + 1e-9)
    steps = int(budget_s / (first.n * per_image_step) + 1e-9)
    fits = [f"{images} image{'s' if images != 1 else ''} at {first.steps} steps" if images else "",
            f"{steps} steps for {first.n} image{'s' if first.n != 1 else ''}" if steps else ""]
    fits = [f for f in fits if f]
    what = " or ".join(fits) if len(requests) == 1 and fits else "fewer steps, fewer images or a smaller model"
    raise ValueError(f"This request needs about {need:.0f} s of compute on {card.id} (about "
                     f"{card.image_step_ms:g} ms per image and step); this server allows {budget_s:.0f} s "
                     f"a request. What fits: {what}.")
