"""Prompts: how a text model's tokenizer reads a prompt, and the embeddings its UNet attends to.

Fast tokenizers are not re-entrant ("Already borrowed" when two threads share one), so every use
holds the model's ``tokenizer_lock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PromptTokens:
    """How a prompt was read: its tokens, words the tokenizer does not know, words cut off."""

    tokens: list[str]
    unknown_words: list[str]
    truncated_words: list[str]


def read_prompt(tokenizer: Any, prompt: str) -> PromptTokens:
    """Tokenize ``prompt`` as the text encoder will, reporting unknown and truncated words."""
    max_tokens = int(tokenizer.model_max_length) - 2  # start and end tokens
    unk = getattr(tokenizer, "unk_token", None)
    vocab = tokenizer.get_vocab()
    unknown: list[str] = []
    tokens: list[str] = []
    truncated: list[str] = []
    for word in prompt.split():
        pieces = tokenizer.tokenize(word)
        if unk is not None and (unk in pieces or any(p not in vocab for p in pieces)):
            unknown.append(word)
        if len(tokens) + len(pieces) > max_tokens:
            truncated.append(word)
            continue
        tokens.extend(pieces)
    return PromptTokens(tokens, unknown, truncated)


def model_reads(model: Any, prompt: str) -> PromptTokens:
    """:func:`read_prompt` with a loaded text model's tokenizer (under its lock)."""
    with model.tokenizer_lock:
        return read_prompt(model.tokenizer, prompt)


def token_labels(model: Any, prompt: str) -> list[str]:
    """The tokens the text encoder sees for ``prompt``, start and end included, truncated as encoded:
    the labels of the cross-attention maps."""
    tokenizer = model.tokenizer
    with model.tokenizer_lock:
        ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
        tokens = tokenizer.convert_ids_to_tokens(ids)
    return [tok.removesuffix("</w>") for tok in tokens]


def encode_prompt(model: Any, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (B, L, D) for a batch of prompts, padded to the tokenizer's max length."""
    with model.tokenizer_lock:
        ids = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
    return model.text_encoder(ids.to(model.device))[0].to(model.dtype)
