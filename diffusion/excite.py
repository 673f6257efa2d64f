"""Attend-and-Excite (Chefer et al. 2023): sampling-time help for prompts with several objects.

A latent text-to-image model often neglects one of two objects: the cross-attention of that object's
word stays weak everywhere, and the word never makes it into the picture. Attend-and-Excite nudges the
noisy latent z_t during the first sampling steps so that every object word gets a strong attention peak
somewhere ("generative semantic nursing"). No weight changes.

At step t, for the conditional prompt only (Chefer et al. 2023, Sec. 4 and Algorithm 1):

1. A_t: the cross-attention (averaged over heads and layers of one resolution) of every image position
   to every token, from the start token's neighbour to the last word (the start token takes most of the
   attention and is left out; so are the end and padding tokens), re-normalised over those tokens with a
   softmax of 100 * A_t;
2. A_t^s, for each object token s, smoothed with a 3x3 Gaussian (sigma 0.5) so that one excited position is
   not enough;
3. L = max_s (1 - max A_t^s) (Eq. 1): the most neglected object's shortfall;
4. z_t' = z_t - alpha_t * grad_z L (Eq. 2), alpha_t = step size * sqrt(1 - 0.5 * i / (N - 1)) decaying from
   the full step size to 0.71 of it over the N steps;
5. at a few early steps ("iterative latent refinement", Sec. 4.2) the update repeats until every object's
   max attention reaches a threshold (or a bounded number of tries).

Then the step goes on with z_t' through the usual loop (:func:`diffusion.loop.denoise`'s ``refine`` hook).
The paper uses 50 steps, edits the first 25 and refines at steps 0, 10 and 20 to thresholds 0.05, 0.5 and
0.8; :meth:`ExciteConfig.for_steps` keeps those fractions for any step count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from diffusion.attention import AttentionStore, recording

#: The words taken as objects by default: the shapes world's nouns.
OBJECT_WORDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "diamond")
SOFTMAX_SCALE = 100.0  # the paper's sharpening of A_t before the softmax over tokens
SMOOTHING_SIGMA = 0.5


@dataclass(frozen=True)
class ExciteConfig:
    """When and how hard the latent is nudged. Indices count sampling steps from 0 (the first, t = T)."""

    step_size: float = 20.0
    last_index: int = 25  # steps 0 .. last_index - 1 are edited
    refine_at: dict[int, float] = field(default_factory=lambda: {0: 0.05, 10: 0.5, 20: 0.8})
    max_refine_iterations: int = 5  # the paper allows 20; each one is a forward and backward pass
    resolution: int | None = None  # the attention maps' layer resolution (None: the finest one recorded)

    @classmethod
    def for_steps(cls, steps: int, step_size: float = 20.0, max_refine_iterations: int = 5) -> ExciteConfig:
        """The paper's schedule (50 steps: edit 25, refine at 0/10/20) scaled to ``steps``."""
        refine = {round(steps * f): threshold for f, threshold in ((0.0, 0.05), (0.2, 0.5), (0.4, 0.8))}
        return cls(step_size, max(1, steps // 2), refine, max_refine_iterations)


@dataclass
class ExciteStep:
    """What one edited step did, for the images with object words (``images``, indices in the batch): their
    object tokens' positions, their loss before and after the update and each object's peak attention after
    it, and the number of updates of z_t."""

    index: int
    images: list[int]
    tokens: list[list[int]]
    loss_before: list[float]
    loss_after: list[float]
    max_attention: list[list[float]]
    iterations: int


def subject_indices(tokens: Sequence[str], words: Sequence[str] = OBJECT_WORDS) -> list[int]:
    """Positions (in the encoded sequence, start token at 0) of the tokens that name objects.

    ``tokens``: the text encoder's tokens for one prompt, start and end included
    (:func:`diffusion.prompts.token_labels`)."""
    wanted = {w.lower() for w in words}
    return [i for i, tok in enumerate(tokens) if tok.lower() in wanted]


def _gaussian_kernel(sigma: float = SMOOTHING_SIGMA, size: int = 3) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def object_attention(maps: torch.Tensor, subjects: Sequence[Sequence[int]], ends: Sequence[int]) -> list[torch.Tensor]:
    """Each object's smoothed peak attention, per image.

    ``maps``: (B, L, h, w) cross-attention probabilities; ``subjects[b]``: image b's object token
    positions (S_b >= 1 of them); ``ends[b]``: the position of its end token. Returns B tensors (S_b,) in
    [0, 1]: the max over positions of the Gaussian-smoothed, re-normalised A_t^s.
    """
    kernel = _gaussian_kernel().to(maps.device)
    peaks = []
    for b, (tokens, end) in enumerate(zip(subjects, ends, strict=True)):
        text = torch.softmax(maps[b, 1:end] * SOFTMAX_SCALE, dim=0)  # words only: no start, end or padding
        chosen = text[[s - 1 for s in tokens]][:, None]  # (S_b, 1, h, w)
        smooth = F.conv2d(F.pad(chosen, (1, 1, 1, 1), mode="reflect"), kernel)
        peaks.append(smooth.flatten(1).max(dim=1).values)
    return peaks


def excite_loss(peaks: torch.Tensor) -> torch.Tensor:
    """One image's loss: max over its objects of (1 - peak) (Chefer et al. 2023, Eq. 1). (S,) -> ()."""
    return (1 - peaks).max()


def make_refiner(unet_call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latent_size: int,
                 subjects: Sequence[Sequence[int]], ends: Sequence[int], config: ExciteConfig,
                 num_steps: int, log: list[ExciteStep] | None = None
                 ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """The ``refine(z_t, t, index) -> z_t'`` hook of :func:`diffusion.loop.denoise`.

    ``unet_call(z, t)`` runs the UNet on the conditional prompts only (B images) with gradients on;
    the cross-attention is recorded while it runs. Images without object tokens are left alone; so are
    steps from ``config.last_index`` on. ``log`` collects one :class:`ExciteStep` per edited step.
    """
    active = [b for b, s in enumerate(subjects) if s]

    def peaks_of(z: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        with recording(AttentionStore((latent_size, latent_size))) as store:
            unet_call(z, t)
        maps = store.maps()
        resolution = config.resolution or max(maps.layers)
        return object_attention(maps.mean(resolution)[active], [subjects[b] for b in active],
                                [ends[b] for b in active])

    def refine(z: torch.Tensor, t: torch.Tensor, index: int) -> torch.Tensor:
        if index >= config.last_index or not active:
            return z
        alpha = config.step_size * (1.0 - 0.5 * index / max(num_steps - 1, 1)) ** 0.5  # Eq. 2's step size
        threshold = config.refine_at.get(index)
        z = z.detach().clone()  # a normal tensor (the loop's latents are inference tensors)
        before: list[float] | None = None
        iterations = 0
        with torch.inference_mode(False), torch.enable_grad():
            # refinement steps: update until every object's peak reaches the threshold (bounded), then the
            # step's own update, as every edited step does (Algorithm 1)
            tries = config.max_refine_iterations + 1 if threshold is not None else 1
            for attempt in range(tries):
                z.requires_grad_(True)
                peaks = peaks_of(z, t)
                losses = torch.stack([excite_loss(p) for p in peaks])
                if before is None:
                    before = losses.tolist()
                refining = attempt < tries - 1
                if refining and all(bool(p.min() >= threshold) for p in peaks):
                    refining = False
                # images are independent (no batch statistics in the UNet): one backward for all of them
                (grad,) = torch.autograd.grad(losses.sum(), z)
                z = (z - alpha * grad).detach()  # Eq. 2 (images without object words get a zero gradient)
                iterations += 1
                if not refining:
                    break
            if log is not None:  # measured after the update, for the step lab and the tests
                with torch.no_grad():
                    peaks = peaks_of(z, t)
                log.append(ExciteStep(index, active, [list(subjects[b]) for b in active], before,
                                      [float(excite_loss(p)) for p in peaks], [p.tolist() for p in peaks], iterations))
        return z.detach()

    return refine
