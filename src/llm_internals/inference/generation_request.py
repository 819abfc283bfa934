"""Checking a generation request and turning it into per-prompt states (errors before any work).

A request is a prompt (text, token ids, or a batch of either), sampling parameters (one set or
one per prompt), max_new_tokens, the eos ids and the padding side. Decoder-only models continue
the prompt; encoder-decoder models (Seq2SeqLM) read it with the encoder and start the decoder
from decoder_start_token_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generation_types import GREEDY
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sequence_state import SequenceState

PADDING_SIDES = ("left", "right")


def is_seq2seq(model: torch.nn.Module) -> bool:
    """An encoder-decoder (Seq2SeqLM): has separate encode() and decode()."""
    return hasattr(model, "encode") and hasattr(model, "decode") and hasattr(model, "settings")


def prompt_token_ids(prompt: Any, tokenizer: Any | None, label: str) -> list[int]:
    """The token ids of one prompt given as text (encoded with `tokenizer`) or as ids; `label`
    names the prompt in errors (e.g. "prompt 2")."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise LLMInternalsError(
                f"{label} is text but no tokenizer was given",
                hint="pass the model's tokenizer, or token ids",
            )
        return list(tokenizer.encode(prompt))
    if isinstance(prompt, Sequence) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        return list(prompt)
    raise LLMInternalsError(
        f"{label} must be a string or a list of token ids, got {type(prompt).__name__}"
    )


def split_prompts(prompt: Any) -> tuple[list[Any], bool]:
    """(the prompts of a request, whether a single prompt was given): a string or a list of ids
    is one prompt; a list of those is a batch. Used by `generate` and `LLM.generate`."""
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    single = isinstance(prompt, str) or (
        isinstance(prompt, Sequence) and bool(prompt) and isinstance(prompt[0], int)
    )
    items = [prompt] if single else prompt
    if not isinstance(items, Sequence) or isinstance(items, str) or len(items) == 0:
        raise LLMInternalsError(
            "prompt must be a non-empty string, a list of token ids, or a list of either",
            hint='e.g. generate(model, tokenizer, "Once upon a time")',
        )
    return list(items), single


def check_prompt_ids(
    ids: list[int], label: str, vocab_size: int, context: int | None, hint: str | None = None
) -> None:
    """The checks every prompt passes on both paths: not empty, ids inside the vocabulary, and
    (unless `context` is None: a sliding window crops it) no longer than the context."""
    if not ids:
        raise LLMInternalsError(
            f"{label} is empty: generation needs at least one token to continue from",
            hint="start from a newline or the tokenizer's beginning-of-text token",
        )
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise LLMInternalsError(
            f"{label}: token id {bad[0]} is outside the vocabulary (size {vocab_size})"
        )
    if context is not None and len(ids) > context:
        raise LLMInternalsError(
            f"{label} has {len(ids)} tokens, more than the model's context of {context}",
            hint=hint or f"shorten the prompt to at most {context} tokens",
        )


def check_stop_strings(params: SamplingParams, tokenizer: Any | None, label: str) -> None:
    if params.stop and tokenizer is None:
        raise LLMInternalsError(
            f"{label}: stop strings need a tokenizer to decode the output",
            hint="give the model's tokenizer (or drop --stop)",
        )


def as_prompts(prompt: Any, tokenizer: Any | None) -> tuple[list[list[int]], bool]:
    """(token ids of each prompt, whether a single prompt was given)."""
    items, single = split_prompts(prompt)
    return [
        prompt_token_ids(item, tokenizer, f"prompt {i}") for i, item in enumerate(items)
    ], single


def as_params(
    params: SamplingParams | Sequence[SamplingParams] | None, sampling: dict[str, Any], n: int
) -> list[SamplingParams]:
    """One SamplingParams per prompt, from `params` or from keyword fields (default greedy)."""
    if params is not None and sampling:
        raise LLMInternalsError(
            f"give either params or sampling keywords ({', '.join(sampling)}), not both"
        )
    if params is None:
        try:
            params = SamplingParams(**sampling) if sampling else GREEDY
        except TypeError as err:
            raise LLMInternalsError(f"unknown sampling parameter: {err}") from None
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, SamplingParams) for p in params):
        raise LLMInternalsError(
            f"params must be one SamplingParams or a list of {n} (one per prompt), "
            f"got {len(params)} item(s)"
        )
    return params


def eos_ids(eos_token_id: Any, tokenizer: Any | None, model: torch.nn.Module) -> frozenset[int]:
    """ "auto": the seq2seq model's eos id, else the tokenizer's end-of-text token (if any)."""
    if eos_token_id == "auto":
        if is_seq2seq(model):
            return frozenset([model.settings.eos_token_id])
        eot = getattr(tokenizer, "eot_id", None) if tokenizer is not None else None
        return frozenset() if eot is None else frozenset([eot])
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset([eos_token_id])
    return frozenset(int(t) for t in eos_token_id)


def check_request(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    padding_side: str,
    sliding_window: bool = False,
) -> int:
    """Validate; return the model's context length."""
    if not hasattr(model, "config") or not (hasattr(model, "hidden_states") or is_seq2seq(model)):
        raise LLMInternalsError(
            f"generate needs a decoder language model (DecoderLM) or an encoder-decoder "
            f"(Seq2SeqLM), got {type(model).__name__}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
        max_new_tokens <= 0
    ):  # fmt: skip
        raise LLMInternalsError(
            f"max_new_tokens must be a positive integer, got {max_new_tokens!r}",
            hint="--max-new-tokens takes a positive integer",
        )
    if padding_side not in PADDING_SIDES:
        raise LLMInternalsError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not isinstance(sliding_window, bool):
        raise LLMInternalsError(f"sliding_window must be True or False, got {sliding_window!r}")
    if sliding_window and is_seq2seq(model):
        raise LLMInternalsError(
            "--sliding-window works with decoder-only models; an encoder-decoder reads its "
            "whole source at once"
        )
    context = model.config.max_seq_len
    for i, ids in enumerate(prompts):
        check_prompt_ids(ids, f"prompt {i}", model.config.vocab_size,
                         None if sliding_window else context,
                         hint=f"shorten the prompt, or pass --sliding-window to keep its last "
                         f"{context} tokens")  # fmt: skip
    return context


def prepare(
    model: torch.nn.Module,
    tokenizer: Any | None,
    prompt: Any,
    max_new_tokens: int,
    params: SamplingParams | Sequence[SamplingParams] | None,
    eos_token_id: Any,
    padding_side: str,
    sampling: dict[str, Any],
    sliding_window: bool = False,
) -> tuple[list[SequenceState], bool]:
    """Check the request (errors before any work) and set up one SequenceState per prompt."""
    prompts, single = as_prompts(prompt, tokenizer)
    params_list = as_params(params, sampling, len(prompts))
    context = check_request(model, prompts, max_new_tokens, padding_side, sliding_window)
    for i, p in enumerate(params_list):
        check_stop_strings(p, tokenizer, f"prompt {i}")
    eos = eos_ids(eos_token_id, tokenizer, model)
    start = [model.settings.decoder_start_token_id] if is_seq2seq(model) else None
    seqs = [
        SequenceState(i, ids, p, tokenizer, eos, max_new_tokens, context, start, not sliding_window)
        for i, (ids, p) in enumerate(zip(prompts, params_list, strict=True))
    ]
    return seqs, single


def pad_prompts(
    prompts: list[list[int]], side: str, pad_id: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention_mask, index of each row's last real token), padded to one width, built
    on the CPU and moved to `device` in one copy each."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device="cpu")
    last = []
    for row, prompt in enumerate(prompts):
        start = width - len(prompt) if side == "left" else 0
        ids[row, start : start + len(prompt)] = torch.tensor(prompt, device="cpu")
        mask[row, start : start + len(prompt)] = 1
        last.append(start + len(prompt) - 1)
    return ids.to(device), mask.to(device), torch.tensor(last, device=device)
