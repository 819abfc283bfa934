"""A model and its contiguous KV cache, for a batch whose rows advance by different amounts.

Speculative decoding accepts a different number of draft tokens in each row, so after a round
the rows hold different numbers of tokens. One contiguous cache shares one column count, so the
rows are kept apart with the attention mask, not with per-row caches (which would run the model
once per row):

    columns:   0 1 2 3 4 5 6 7 8          mask (row 0)  1 1 1 1 1 1 0 0 .
    row 0:     a b c d e f x x .          mask (row 1)  0 0 1 1 1 1 1 1 .
    row 1:     . . g h i j k l .
                                    x: rejected drafts (holes), .: left padding

- Each call feeds every row its new tokens, right-aligned: a row with fewer gets holes (mask 0)
  on the left of its chunk. Positions come from the mask (models/decoder.py counts only real
  tokens), so a hole shifts no position and no query attends to it.
- `prepare(histories)` rolls each row back to the longest prefix of its cached tokens that is
  still its history (the accepted tokens), masking the rest as holes, truncates the columns no
  row uses any more (`ContiguousKVCache.truncate`), and returns what each row still has to feed.
- When the next chunk would not fit, `compact` squeezes the holes out: each row's real columns
  are moved right-aligned (left padding; `ContiguousKVCache.gather_columns`).

At batch 1 no hole ever appears: the cache is truncated to exactly the accepted length.
"""

from __future__ import annotations

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_cache import ContiguousKVCache


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


class RowCache:
    """`model` with a KV cache of `capacity` columns for `batch` rows; `tokens[r]` are the
    tokens whose K/V row r holds, in order."""

    def __init__(self, model: torch.nn.Module, batch: int, capacity: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache = ContiguousKVCache.for_model(model, batch, capacity)
        self.mask = torch.zeros(batch, 0, dtype=torch.long, device=self.device)
        self.tokens: list[list[int]] = [[] for _ in range(batch)]

    @property
    def columns(self) -> int:
        return self.cache.past_length()

    def prepare(self, histories: list[list[int]]) -> list[list[int]]:
        """Roll every row back to its longest cached prefix of `histories[r]`, short of the last
        token (its hidden state is what the caller needs next); return the tokens each row must
        still feed (histories[r] past that prefix, never empty)."""
        keep = [min(common_prefix(held, history), len(history) - 1)
                for held, history in zip(self.tokens, histories, strict=True)]  # fmt: skip
        self.rollback(keep)
        return [history[n:] for history, n in zip(histories, keep, strict=True)]

    def rollback(self, keep: list[int]) -> None:
        """Row r keeps only its first keep[r] tokens; the columns of the others become holes,
        and trailing columns that no row uses are truncated away."""
        if self.columns == 0:
            return
        real = self.mask.bool()
        order = self.mask.cumsum(dim=-1)  # the 1-based index of each real token in its row
        limit = torch.tensor(keep, device=self.device)[:, None]
        self.mask = (real & (order <= limit)).long()
        self.tokens = [held[:n] for held, n in zip(self.tokens, keep, strict=True)]
        used = self.mask.any(dim=0).nonzero()
        end = int(used.max()) + 1 if used.numel() else 0
        self.cache.truncate(end)
        self.mask = self.mask[:, :end]

    def compact(self) -> None:
        """Move each row's real columns right-aligned, dropping the holes between them."""
        counts = self.mask.sum(dim=-1)
        width = int(counts.max()) if counts.numel() else 0
        index = torch.zeros(len(self.tokens), width, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(index)
        for row in range(len(self.tokens)):
            cols = self.mask[row].nonzero().flatten()
            index[row, width - len(cols) :] = cols
            mask[row, width - len(cols) :] = 1
        self.cache.gather_columns(index)
        self.mask = mask

    def forward(self, chunks: list[list[int]]) -> torch.Tensor:
        """Feed row r the tokens chunks[r] (right-aligned) and return the hidden states
        (batch, width, d_model): row r's last token sits in the last column. A row with nothing
        to feed gets holes only (its hidden states are meaningless)."""
        width = max(len(c) for c in chunks)
        if self.columns + width > self.cache.max_len:
            self.compact()
            if self.columns + width > self.cache.max_len:
                raise LLMInternalsError(
                    f"speculative KV cache is full: {self.columns} + {width} columns do not fit "
                    f"in {self.cache.max_len}"
                )
        ids = torch.zeros(len(chunks), width, dtype=torch.long)
        new_mask = torch.zeros(len(chunks), width, dtype=torch.long)
        for row, chunk in enumerate(chunks):
            if chunk:
                ids[row, width - len(chunk) :] = torch.tensor(chunk)
                new_mask[row, width - len(chunk) :] = 1
            self.tokens[row] = self.tokens[row] + list(chunk)
        self.mask = torch.cat([self.mask, new_mask.to(self.device)], dim=1)
        return self.model.hidden_states(
            ids.to(self.device), attention_mask=self.mask, cache=self.cache
        )

    def select_rows(self, index: list[int]) -> None:
        """Keep only these rows (sequences that finished leave the batch)."""
        self.cache.select_rows(index)
        self.mask = self.mask[torch.tensor(index, device=self.device)]
        self.tokens = [self.tokens[r] for r in index]
