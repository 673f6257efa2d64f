"""Word-level tokenizers built with HF ``tokenizers`` for small captioned worlds.

Used by the embedded latent model's caption vocabulary and by the tests' tiny text
pipelines. The tokenizer is a ``PreTrainedTokenizerFast`` so that diffusers pipelines save
and load it like any other; unknown words map to ``[UNK]`` and are reported to the user.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 16) -> PreTrainedTokenizerFast:
    """Lower-cased, punctuation-split word tokenizer with [BOS] ... [EOS] framing."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, pad_token="[PAD]", unk_token="[UNK]",
        bos_token="[BOS]", eos_token="[EOS]")
