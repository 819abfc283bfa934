"""Checks on a request before the engine accepts it: each error names the request and field.

A request is refused when it is malformed (empty prompt, ids outside the vocabulary, text without
a tokenizer: the checks `generate` runs too, from generation_request.py) or when it could never
run: a prompt beyond the model's context, more samples than max_num_seqs (n > 1 at all with
speculative decoding), or more KV blocks than the whole pool holds. The last check is what keeps the
scheduler deadlock-free: every accepted sequence fits in the pool on its own.
"""

from __future__ import annotations

from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generation_request import (
    check_prompt_ids,
    check_stop_strings,
    prompt_token_ids,
)
from llm_internals.inference.paged.block_manager import BlockManager
from llm_internals.inference.params import SamplingParams


def check_request(
    request_id: Any,
    prompt: Any,
    params: Any,
    *,
    tokenizer: Any | None,
    vocab_size: int,
    max_seq_len: int,
    block_manager: BlockManager,
    max_num_seqs: int,
    speculative: bool = False,
) -> list[int]:
    """The prompt's token ids, or LLMInternalsError saying why the request cannot run."""
    if not isinstance(request_id, str) or not request_id:
        raise LLMInternalsError(f"request_id must be a non-empty string, got {request_id!r}")
    if not isinstance(params, SamplingParams):
        raise LLMInternalsError(
            f"request {request_id!r}: params must be a SamplingParams, got {type(params).__name__}"
        )
    if params.n > max_num_seqs:
        raise LLMInternalsError(
            f"request {request_id!r}: n={params.n} samples exceed max_num_seqs="
            f"{max_num_seqs} (the samples run side by side)",
            hint="lower n or raise max_num_seqs",
        )
    if speculative and params.n > 1:
        raise LLMInternalsError(
            f"request {request_id!r}: n={params.n} samples with speculative decoding: parallel "
            "sampling is not supported with a draft (--speculative-model, --speculative-ngram)",
            hint="send n=1 requests, or serve without speculative decoding",
        )
    label = f"request {request_id!r}: the prompt"
    ids = prompt_token_ids(prompt, tokenizer, label)
    check_prompt_ids(ids, label, vocab_size, max_seq_len)
    check_stop_strings(params, tokenizer, f"request {request_id!r}")
    stored = min(len(ids) + params.max_tokens - 1, max_seq_len)
    blocks = block_manager.blocks_for_tokens(stored)
    if blocks > block_manager.num_blocks:
        raise LLMInternalsError(
            f"request {request_id!r}: {len(ids)} prompt tokens + max_tokens="
            f"{params.max_tokens} need {blocks} KV blocks, but the whole pool has "
            f"{block_manager.num_blocks}",
            hint="lower max_tokens or shorten the prompt, or give the engine a larger KV pool "
            "(serve --kv-cache-gb; more blocks in the explorer's engine settings)",
        )
    return ids


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LLMInternalsError(f"engine: {name} must be a positive integer, got {value!r}")
