"""Cross-attention maps per prompt token, captured with diffusers attention processors.

In a latent text-to-image UNet every cross-attention layer ("attn2" of each transformer block)
lets each latent position attend to the prompt's tokens: softmax(Q K^T / sqrt(d)) with queries
from the image features and keys from the text encoder's output (Rombach et al. 2022, Eq. 3;
Vaswani et al. 2017, Eq. 1). Each row sums to 1 over the tokens, so the probabilities say how
much of that position's update comes from each word (Hertz et al. 2022, "Prompt-to-Prompt").

:func:`install_recorders` wraps the processor of every cross-attention layer once, at load time,
without editing diffusers. The wrapper calls the original processor (outputs are bit-identical)
and, only while a :class:`AttentionStore` is active in the current context (:func:`recording`),
also computes that layer's attention probabilities, averaged over heads and upsampled to the
latent's size. Other requests running at the same time record nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

_ACTIVE: ContextVar[AttentionStore | None] = ContextVar("cross_attention_store", default=None)


@dataclass(frozen=True)
class AttentionMaps:
    """One UNet call's cross-attention, averaged over heads and over the layers of each resolution.

    ``by_resolution`` maps a layer resolution (its feature map's height, e.g. 8 for 8x8) to
    probabilities (B, L, h, w) at the latent's size (h, w), float32, for L prompt tokens (padding
    included); at every position they sum to 1 over the tokens. ``layers`` counts the layers of
    each resolution.
    """

    by_resolution: dict[int, torch.Tensor]
    layers: dict[int, int]

    def mean(self, resolution: int | None = None) -> torch.Tensor:
        """(B, L, h, w): the average over all layers (weighted by layer count) or one resolution's."""
        if resolution is not None:
            return self.by_resolution[resolution]
        total = sum(self.by_resolution[r] * n for r, n in self.layers.items())
        return total / sum(self.layers.values())

    def select(self, index: slice) -> AttentionMaps:
        """The same maps for a slice of the batch (e.g. the conditional half of a guided call)."""
        return AttentionMaps({r: m[index] for r, m in self.by_resolution.items()}, dict(self.layers))


@dataclass
class AttentionStore:
    """Accumulates the cross-attention probabilities of one UNet call.

    ``size`` is the latent's (h, w); each layer's map (B, L, h_l, w_l) is upsampled bilinearly to
    it (interpolation weights sum to 1, so the maps still sum to 1 over tokens).
    """

    size: tuple[int, int]
    _sums: dict[int, torch.Tensor] = field(default_factory=dict)
    _layers: dict[int, int] = field(default_factory=dict)

    def add(self, probs: torch.Tensor) -> None:
        """Add one layer's head-averaged probabilities (B, N, L), N = h_l * w_l positions."""
        batch, positions, tokens = probs.shape
        height, width = self.size
        factor = math.sqrt(height * width / positions)
        h_l, w_l = round(height / factor), round(width / factor)
        if h_l * w_l != positions:
            raise ValueError(f"cannot place {positions} positions on a {height}x{width} latent")
        maps = probs.transpose(1, 2).reshape(batch, tokens, h_l, w_l).float()
        if (h_l, w_l) != (height, width):
            maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        self._sums[h_l] = self._sums[h_l] + maps if h_l in self._sums else maps
        self._layers[h_l] = self._layers.get(h_l, 0) + 1

    def maps(self) -> AttentionMaps:
        if not self._layers:
            raise RuntimeError("no cross-attention layer ran while recording: is this a text-conditioned UNet?")
        by_resolution = {r: self._sums[r] / n for r, n in sorted(self._layers.items(), reverse=True)}
        return AttentionMaps(by_resolution, dict(sorted(self._layers.items(), reverse=True)))


@contextmanager
def recording(store: AttentionStore) -> Iterator[AttentionStore]:
    """Record the cross-attention of the UNet calls made inside this block (this context only)."""
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


def attention_probs(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale) of one diffusers ``Attention`` layer, averaged over heads: (B, N, L).

    Follows the steps of diffusers' ``AttnProcessor`` up to the probabilities (input reshaping,
    group norm, cross norm, query/key norms, mask), computed in float32.
    """
    if hidden_states.ndim == 4:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    batch, positions, _ = hidden_states.shape
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    query = attn.to_q(hidden_states)
    key = attn.to_k(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2).float()
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2).float()
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    scores = query @ key.transpose(-1, -2) * attn.scale  # (B, heads, N, L)
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
        scores = scores + mask.view(batch, attn.heads, -1, mask.shape[-1]).float()
    return scores.softmax(dim=-1).mean(dim=1)


class CrossAttentionRecorder:
    """An attention processor that runs the layer's own processor and, while recording, its maps."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        store = _ACTIVE.get()
        if store is not None and encoder_hidden_states is not None:
            store.add(attention_probs(attn, hidden_states, encoder_hidden_states, attention_mask))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def install_recorders(unet: torch.nn.Module) -> int:
    """Wrap the processor of every cross-attention layer ("attn2") of ``unet``; idempotent.

    Returns the number of cross-attention layers wrapped (0 for an unconditional UNet).
    """
    if not hasattr(unet, "attn_processors"):  # e.g. UNet2DModel: no processor API, no cross-attention
        return 0
    processors = dict(unet.attn_processors)
    wrapped = 0
    for name, processor in processors.items():
        if name.endswith("attn2.processor"):
            wrapped += 1
            if not isinstance(processor, CrossAttentionRecorder):
                processors[name] = CrossAttentionRecorder(processor)
    if wrapped:
        unet.set_attn_processor(processors)
    return wrapped
