"""How to speculate, checked before any work: one draft source, gamma >= 1, a draft that fits.

`speculative_config` turns `generate`'s keywords (draft_model=, ngram=, num_speculative_tokens=,
adaptive_gamma=, speculative_stats=) into a SpeculativeConfig or None; every refusal is one
LLMInternalsError whose hint names the CLI flag. Drafts longer than the context left are not an
error: loop.py clips them per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.speculative.adaptive import GammaSchedule
from llm_internals.inference.speculative.proposers import NgramProposer
from llm_internals.inference.speculative.stats import SpeculativeStats

DEFAULT_NGRAM = (1, 3)  # n-gram sizes (min, max) tried by prompt lookup


@dataclass
class SpeculativeConfig:
    """How to speculate: a draft model or n-gram lookup (exactly one), gamma (the number of
    speculative tokens per round, or its maximum when adaptive), and the stats to fill in."""

    draft_model: torch.nn.Module | None = None
    ngram: tuple[int, int] | None = None
    num_speculative_tokens: int = 4
    adaptive_gamma: bool = False
    stats: SpeculativeStats = field(default_factory=SpeculativeStats)


def check_speculative(model: torch.nn.Module, config: SpeculativeConfig) -> None:
    """Errors before any work: one draft source, gamma >= 1, a draft that fits the target."""
    GammaSchedule(config.num_speculative_tokens)  # validates gamma
    if (config.draft_model is None) == (config.ngram is None):
        raise LLMInternalsError(
            "speculative decoding needs exactly one draft source: a draft model or n-gram lookup",
            hint="give --draft-model PATH or --ngram, not both",
        )
    if model.config.sliding_window is not None:
        raise LLMInternalsError(
            "speculative decoding does not support sliding-window attention models",
            hint="drop --draft-model / --ngram for this model",
        )
    draft = config.draft_model
    if draft is None:
        NgramProposer(*config.ngram)  # validates the sizes
        return
    if not hasattr(draft, "hidden_states") or not hasattr(draft, "config"):
        raise LLMInternalsError(
            f"the draft model must be a decoder language model (DecoderLM), got "
            f"{type(draft).__name__}",
            hint="--draft-model takes a decoder-only checkpoint directory",
        )
    if draft.config.vocab_size != model.config.vocab_size:
        raise LLMInternalsError(
            f"the draft model's vocabulary ({draft.config.vocab_size} tokens) differs from the "
            f"target's ({model.config.vocab_size}): drafts must use the target's tokenizer",
            hint="--draft-model must be trained with the same tokenizer as --model",
        )
    if draft.config.sliding_window is not None:
        raise LLMInternalsError(
            "speculative decoding does not support a sliding-window attention draft model",
            hint="choose another --draft-model",
        )
    if draft.config.max_seq_len < model.config.max_seq_len:
        raise LLMInternalsError(
            f"the draft model's context ({draft.config.max_seq_len} tokens) is shorter than the "
            f"target's ({model.config.max_seq_len}): it could not draft near the end",
            hint="--draft-model needs max_seq_len >= the target's",
        )


def speculative_config(
    model: torch.nn.Module,
    draft_model: torch.nn.Module | None,
    ngram: bool | tuple[int, int],
    num_speculative_tokens: int,
    adaptive_gamma: bool,
    stats: SpeculativeStats | None,
    *,
    use_cache: bool,
    sliding_window: bool,
    seq2seq: bool,
) -> SpeculativeConfig | None:
    """`generate`'s speculative keywords as a checked SpeculativeConfig; None when neither a
    draft model nor n-gram lookup is asked for. ngram: True (sizes 1..3) or (min_n, max_n)."""
    if draft_model is None and ngram is False:
        return None
    sizes = None if ngram is False else (DEFAULT_NGRAM if ngram is True else tuple(ngram))
    for flag, bad, why in (
        ("--no-cache", not use_cache, "it verifies drafts against the target's KV cache"),
        ("--sliding-window", sliding_window, "a cropped window would invalidate both caches"),
        ("an encoder-decoder model", seq2seq, "it drafts for decoder-only models"),
    ):
        if bad:
            raise LLMInternalsError(
                f"speculative decoding cannot be combined with {flag}: {why}",
                hint=f"drop {flag} or drop --draft-model / --ngram",
            )
    config = SpeculativeConfig(draft_model, sizes, num_speculative_tokens, adaptive_gamma,
                               stats if stats is not None else SpeculativeStats())  # fmt: skip
    check_speculative(model, config)
    return config


def check_same_tokenizer(target: Any, draft: Any, vocab_size: int) -> None:
    """The draft's tokenizer must map every id to the same text as the target's: drafts are
    token ids, so a different vocabulary would propose words the target never meant. Compares
    the decoded text of each of the `vocab_size` ids (a byte-identical file passes at once)."""
    for token_id in range(vocab_size):
        ours, theirs = target.decode([token_id]), draft.decode([token_id])
        if ours != theirs:
            raise LLMInternalsError(
                f"the draft model's tokenizer differs from the target's: token id {token_id} is "
                f"{theirs!r} for the draft, {ours!r} for the target",
                hint="--draft-model must use the same tokenizer as --model",
            )
