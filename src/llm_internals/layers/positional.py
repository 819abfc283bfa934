"""Absolute position encodings: learned (GPT-2, BERT) and sinusoidal (the original Transformer).

Attention by itself is permutation-invariant: without position information "dog bites man" and
"man bites dog" give the same set of vectors. These encodings add a position-dependent vector to
each token embedding. Sinusoidal ones (Vaswani et al. 2017) need no parameters:

    PE[pos, 2i] = sin(pos / 10000^(2i/d)),   PE[pos, 2i+1] = cos(pos / 10000^(2i/d))

`layout="halves"` puts all sines first and all cosines second (HF Marian's layout); the values are
the same, only the feature order differs. Rotary embeddings (RoPE) live in rope.py.
"""

from __future__ import annotations

import torch
from torch import nn

from llm_internals.trace import record


def sinusoidal_table(
    n_positions: int, dim: int, base: float = 10000.0, layout: str = "interleaved"
) -> torch.Tensor:
    """The (n_positions, dim) sinusoidal table, computed in float64 and returned as float32."""
    if layout not in ("interleaved", "halves"):
        raise ValueError(f"unknown sinusoidal layout {layout!r}")
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]
    pair_index = torch.arange(0, dim, 2, dtype=torch.float64)  # 2i
    angles = positions / base ** (pair_index / dim)  # (n_positions, ceil(dim/2))
    sin, cos = torch.sin(angles), torch.cos(angles)[:, : dim // 2]
    if layout == "halves":
        table = torch.cat((sin, cos), dim=-1)
    else:
        table = torch.zeros(n_positions, dim, dtype=torch.float64)
        table[:, 0::2] = sin
        table[:, 1::2] = cos
    return table.float()


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal vectors looked up by position id (a non-trainable buffer)."""

    def __init__(self, n_positions: int, dim: int, layout: str = "interleaved") -> None:
        super().__init__()
        self.table = nn.Buffer(sinusoidal_table(n_positions, dim, layout=layout), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        out = self.table[positions]
        record("position_embedding", out, note="sinusoidal")
        return out


class LearnedPositionalEmbedding(nn.Module):
    """One trained vector per position, up to a fixed maximum length."""

    def __init__(self, n_positions: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_positions, dim).normal_(std=0.02))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        out = self.weight[positions]
        record("position_embedding", out, note="learned")
        return out
