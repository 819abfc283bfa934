"""Attention masks as boolean tensors: True where a query may attend to a key.

Shapes broadcast against attention scores of shape (batch, heads, queries, keys):

- causal: (queries, keys). With a cache the queries are the last `queries` of `keys` positions,
  so query i sits at key index i + (keys - queries) and sees keys j <= that index.
- sliding window (Mistral): additionally j > index - window, so each query sees at most `window`
  keys, itself included.
- padding: (batch, 1, 1, keys) from a 0/1 attention_mask over the keys (1 = real token).

Combining is a logical AND. A query whose row ends up all False (a padding query in a left-padded
batch) gets zero attention output rather than NaN; see attention.py.
"""

from __future__ import annotations

import torch


def causal_mask(
    q_len: int,
    k_len: int | None = None,
    sliding_window: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(q_len, k_len) lower-triangular mask aligned so the last query sees every key."""
    k_len = q_len if k_len is None else k_len
    query_index = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    key_index = torch.arange(k_len, device=device)[None, :]
    allowed = key_index <= query_index
    if sliding_window is not None:
        allowed = allowed & (key_index > query_index - sliding_window)
    return allowed


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, keys) 0/1 or bool tensor -> (batch, 1, 1, keys) bool mask."""
    return attention_mask.bool()[:, None, None, :]


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the given masks (None entries ignored; None if all are None)."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        result = mask if result is None else result & mask
    return result


def positions_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-row position ids that count only real tokens: left padding does not shift positions.

    position = (number of real tokens up to and including this one) - 1, clamped at 0 for pads.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp_min(0)
