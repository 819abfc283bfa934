"""Turn a multi-head (or grouped) attention checkpoint into one with fewer K/V heads.

Ainslie et al. (2023, "GQA") convert an MHA model to GQA by mean-pooling the key and value
projection heads of each group, then continue training briefly ("uptraining") to recover
quality. With G = n_kv_heads groups of n = H / G consecutive heads (the grouping attention uses:
query head h reads K/V head h // n):

    W_k^g = (1/n) sum_{h in group g} W_k^h,   W_v^g likewise (biases too)

Queries, outputs, FFNs and embeddings are copied unchanged. The pooling step is what this module
does; the continued training is ordinary training of the returned model.
"""

from __future__ import annotations

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models.decoder import DecoderLM


def mean_pool_heads(weight: torch.Tensor, n_heads: int, n_groups: int) -> torch.Tensor:
    """(n_heads * head_dim, ...) projection rows -> (n_groups * head_dim, ...), group means."""
    head_dim = weight.shape[0] // n_heads
    grouped = weight.reshape(n_groups, n_heads // n_groups, head_dim, *weight.shape[1:])
    return grouped.mean(dim=1).reshape(n_groups * head_dim, *weight.shape[1:])


def uptrain_init(model: DecoderLM, n_kv_heads: int) -> DecoderLM:
    """A copy of `model` with `n_kv_heads` K/V heads made by mean-pooling the existing ones."""
    config = model.config
    current = config.n_kv_heads
    if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, int) or n_kv_heads <= 0:
        raise LLMInternalsError(f"n_kv_heads must be a positive integer, got {n_kv_heads!r}")
    if n_kv_heads > current or current % n_kv_heads != 0:
        raise LLMInternalsError(
            f"cannot pool {current} K/V heads into {n_kv_heads}",
            hint=f"choose a divisor of {current} (the model's current n_kv_heads)",
        )
    pooled = DecoderLM(config.replace(n_kv_heads=n_kv_heads)).to(next(model.parameters()).dtype)
    state = {}
    for name, tensor in model.state_dict().items():
        if ".attn.k_proj." in name or ".attn.v_proj." in name:
            tensor = mean_pool_heads(tensor, current, n_kv_heads)
        state[name] = tensor
    pooled.load_state_dict(state)
    if config.tie_embeddings:
        pooled.lm_head.tie_to(pooled.tok_emb)
    return pooled.eval()
