"""Token embedding and the output head that maps hidden vectors back to vocabulary logits.

The embedding is a (vocab_size, d_model) table: token id t selects row t. The output head computes
logits = h W^T with a (vocab_size, d_model) matrix. With tied embeddings (GPT-2, small Llamas and
Qwens) both use the same matrix: a token's input vector is also the direction that scores it as
the next token, which saves vocab_size * d_model parameters (38.6 M of GPT-2's 124 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_internals.trace import record


class TokenEmbedding(nn.Module):
    """Look up one d_model vector per token id."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim).normal_(std=0.02))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(ids, self.weight)  # row lookup: self.weight[ids]
        record("token_embedding", out)
        return out


class OutputHead(nn.Module):
    """logits = h W^T; `tie_to` makes W the embedding table itself (one shared Parameter)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim).normal_(std=0.02))

    def tie_to(self, embedding: TokenEmbedding) -> None:
        self.weight = embedding.weight

    def is_tied_to(self, embedding: TokenEmbedding) -> bool:
        return self.weight is embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.weight)
        record("logits", logits)
        return logits
