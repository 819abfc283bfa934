"""The tiled layout shared by the flash forward and backward passes.

Every leading dim (batch, heads) is flattened into one batch dim Z, so each block pair is one
batched matmul for all heads at once. Grouped-query attention (q with H heads, k/v with H_kv
heads, G = H / H_kv) folds each group's G query heads into the rows of its K/V head:

    q (*pre, H, N_q, d) -> (Z = pre x H_kv, N_q * G, d),  row r = query position r // G of
                           query head kv_head * G + r % G

so a query block of B_r positions is B_r * G contiguous rows, K/V are never copied per query
head, and dK = dS^T Q sums over the group inside the same matmul (the GQA reduction for free).

Queries are the last N_q of N_k positions (offset = N_k - N_q, as in layers/masks.py
causal_mask): query position p sees key j when j <= p + offset. A key block is wholly above the
diagonal, and skipped, when its first key is beyond the last query's reach:
j0 > (i1 - 1) + offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llm_internals.layers.flash_counters import PassCounts
from llm_internals.trace import record

NEG_INF = float("-inf")


def finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    """-inf (a row with nothing visible yet) -> 0, so exponents against it stay defined."""
    return x.masked_fill(x == NEG_INF, 0.0)


def masked_scores(
    tiles: Tiles, qi: torch.Tensor, i0: int, i1: int, j0: int, j1: int
) -> tuple[torch.Tensor, bool]:
    """S = (scale Q_i) K_j^T with hidden pairs set to -inf; also says whether a mask applied."""
    scores = torch.bmm(qi, tiles.k[:, j0:j1].transpose(1, 2))
    hidden = tiles.block_hidden(i0, i1, j0, j1)
    if hidden is not None:
        scores.masked_fill_(hidden, NEG_INF)
    return scores, hidden is not None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for 16-bit inputs; fp32/fp64 inputs compute in their own dtype."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


@dataclass
class Tiles:
    """Q, K, V in the row layout (compute dtype), block sizes, masks and byte sizes."""

    q: torch.Tensor  # (Z, N_q * G, d)
    k: torch.Tensor  # (Z, N_k, d)
    v: torch.Tensor  # (Z, N_k, d_v)
    q_shape: torch.Size  # the caller's q shape, to undo the layout
    group: int
    block_q: int
    block_k: int
    causal: bool
    hidden: torch.Tensor | None  # NOT mask: (*pre, H_kv, G, N_q or 1, N_k or 1), a view
    io_itemsize: int  # bytes per element of Q, K, V, O in slow memory
    stat_itemsize: int  # bytes per element of L, m, l, D
    counts: PassCounts | None = None  # where `count` adds up, if anywhere
    row_reach: torch.Tensor | None = None  # causal: (N_q * G,) last key index each row sees
    key_index: torch.Tensor | None = None  # causal: arange(N_k)

    @property
    def n_q(self) -> int:
        return self.q.shape[1] // self.group

    @property
    def n_k(self) -> int:
        return self.k.shape[1]

    def q_blocks(self) -> list[tuple[int, int]]:
        return [(i, min(i + self.block_q, self.n_q)) for i in range(0, self.n_q, self.block_q)]

    def k_blocks(self) -> list[tuple[int, int]]:
        return [(j, min(j + self.block_k, self.n_k)) for j in range(0, self.n_k, self.block_k)]

    def rows(self, i0: int, i1: int) -> slice:
        """The rows of query positions [i0, i1) in the (Z, N_q * G, ...) layout."""
        return slice(i0 * self.group, i1 * self.group)

    def visible(self, i0: int, i1: int, j0: int) -> bool:
        """False when the causal mask hides key block j0.. from every query in [i0, i1)."""
        return not self.causal or j0 <= i1 - 1 + self.n_k - self.n_q

    def block_hidden(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor | None:
        """Boolean (True = hidden) broadcastable to (Z, (i1 - i0) * G, j1 - j0), or None."""
        out = None
        if self.causal and j1 - 1 > i0 + self.n_k - self.n_q:  # past the first query's reach
            out = self.key_index[j0:j1] > self.row_reach[self.rows(i0, i1), None]
        if self.hidden is not None:
            part = self.hidden[..., i0:i1, :] if self.hidden.shape[-2] > 1 else self.hidden
            part = part[..., j0:j1] if part.shape[-1] > 1 else part
            if self.group > 1:  # every row of the (B_r, G) block gets its own mask row
                part = part.expand(*part.shape[:-3], self.group, i1 - i0, part.shape[-1])
            # (*pre, H_kv, G, B_r, B_c) -> (*pre, H_kv, B_r, G, B_c) -> (Z, B_r * G, B_c)
            z, rows = part.shape[:-3].numel(), part.shape[-2] * self.group
            part = part.transpose(-3, -2).reshape(z, rows, part.shape[-1])
            out = part if out is None else out | part
        return out

    def tally(self, computed: bool) -> None:
        """One block pair computed, or skipped by the causal mask, if counting."""
        if self.counts is None:
            return
        if computed:
            self.counts.blocks_computed += 1
        else:
            self.counts.blocks_skipped += 1

    def count(self, name: str, x: torch.Tensor, read: bool = True) -> None:
        """Count slice `x` of slow-memory tensor `name` as read (or written), if counting."""
        if self.counts is None:
            return
        stat = name in ("L", "m", "l", "D")
        n_bytes = x.numel() * (self.stat_itemsize if stat else self.io_itemsize)
        (self.counts.load if read else self.counts.store)(name, n_bytes)

    def to_rows(self, x: torch.Tensor) -> torch.Tensor:
        """(*q_lead, n, *trail) -> (Z, n * G, *trail): q, O, dO, or row statistics (no trail)."""
        n_lead = len(self.q_shape) - 2
        n, trail = x.shape[n_lead], x.shape[n_lead + 1 :]
        if self.group > 1:  # (*pre, H, n, *t) -> (*pre, H_kv, G, n, *t) -> (*pre, H_kv, n, G, *t)
            x = x.unflatten(n_lead - 1, (-1, self.group)).transpose(n_lead, n_lead + 1)
        return x.reshape(self.k.shape[0], n * self.group, *trail)

    def from_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of to_rows: (Z, n * G, *trail) -> (*q_lead, n, *trail)."""
        lead, n, trail = self.q_shape[:-2], x.shape[1] // self.group, x.shape[2:]
        if self.group == 1:
            return x.reshape(*lead, n, *trail)
        x = x.reshape(*lead[:-1], lead[-1] // self.group, n, self.group, *trail)
        return x.transpose(len(lead), len(lead) + 1).reshape(*lead, n, *trail)

    def record_step(self, i: int, j: int, m: torch.Tensor, l_sum: torch.Tensor) -> None:
        """Trace records of one computed pair: m and l of query block i after key block j."""
        record("flash.pair", (i, j, "computed"))
        note = f"query block {i} after key block {j}, shape (*q_lead, block_q)"
        record("flash.m", self.from_rows(m), note=note)
        record("flash.l", self.from_rows(l_sum), note=note)


def make_tiles(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    block_q: int,
    block_k: int,
) -> Tiles:
    """Lay q, k, v out as rows (inputs already validated by flash_attention.check_inputs)."""
    dtype = compute_dtype(q.dtype)
    group = q.shape[-3] // k.shape[-3] if q.dim() >= 3 else 1
    hidden = None if mask is None else _mask_view(~mask, q.shape, group)
    tiles = Tiles(
        q=q,
        k=k.to(dtype).reshape(k.shape[:-2].numel(), *k.shape[-2:]),
        v=v.to(dtype).reshape(v.shape[:-2].numel(), *v.shape[-2:]),
        q_shape=q.shape,
        group=group,
        block_q=block_q,
        block_k=block_k,
        causal=causal,
        hidden=hidden,
        io_itemsize=q.element_size(),
        stat_itemsize=torch.finfo(dtype).bits // 8,
    )
    tiles.q = tiles.to_rows(q.to(dtype))
    if causal:  # query position p sees keys j <= p + N_k - N_q
        positions = torch.arange(q.shape[-2], device=q.device) + (k.shape[-2] - q.shape[-2])
        tiles.row_reach = positions.repeat_interleave(group)
        tiles.key_index = torch.arange(k.shape[-2], device=q.device)
    return tiles


def _mask_view(mask: torch.Tensor, q_shape: torch.Size, group: int) -> torch.Tensor:
    """A bool tensor broadcastable to (*q_lead, N_q, N_k) as a view (*pre, H_kv, G, N_q|1, N_k|1).

    Leading dims are expanded (stride 0, no copy) unless all are 1; block_hidden then copies only
    one block at a time into the (Z, rows, B_c) layout.
    """
    lead = tuple(q_shape[:-2])
    mask = mask.reshape((1,) * (len(lead) + 2 - mask.dim()) + tuple(mask.shape))
    if any(size != 1 for size in mask.shape[:-2]):
        mask = mask.expand(*lead, *mask.shape[-2:])
    if group > 1 and mask.shape[len(lead) - 1] > 1:  # one mask per query head: split by group
        return mask.unflatten(len(lead) - 1, (-1, group))
    return mask.unsqueeze(-3)


def scaled_rows(tiles: Tiles, scale: float) -> torch.Tensor:
    """scale * Q in the row layout: S = (scale Q) K^T needs no extra pass over each block."""
    return tiles.q * scale if not math.isclose(scale, 1.0) else tiles.q
