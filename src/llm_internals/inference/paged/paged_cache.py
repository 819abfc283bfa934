"""The physical KV pool: per layer, K and V for every slot of every block.

    keys[layer]   (n_kv_heads, num_blocks, block_size, head_dim)
    values[layer] (n_kv_heads, num_blocks, block_size, head_dim)

Token slot s = block_id * block_size + offset. A sequence's block table turns its positions into
slots (the slot mapping), so its K/V can sit in any blocks, in any order:

    block_table [7, 2], block_size 4:   position 5 -> block 2, offset 1 -> slot 2*4 + 1 = 9

Writing is one index_copy_ of the step's new K/V rows into their slots; reading a sequence's
keys is one index_select of its blocks in table order, which lays them out as positions
0, 1, 2, ... again. Heads come first so that a gathered sequence is, per head, one contiguous
(positions, head_dim) matrix, the layout attention kernels read fastest (measured: the
block-major layout made the fused attention kernel 4-5x slower on the strided keys).
The pool is sized once, from a block count or a memory budget:

    bytes per block = 2 (K and V) x n_layers x block_size x n_kv_heads x head_dim x bytes/element

MLA models (layers/mla.py) keep one latent per token instead: keys[layer] is (1, num_blocks,
block_size, d_c + d_r), the latent [c_kv ; k_rope], and there are no value tensors; the values
read are the keys' first `latent_value_dim` = d_c features (c_kv). A block then costs
n_layers x block_size x (d_c + d_r) x bytes/element (inference/kv_layout.py), so the same budget
holds 2 x n_kv_heads x head_dim / (d_c + d_r) times more blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_layout import kv_layout

GIB = 2**30


def bytes_per_block(config, block_size: int, dtype: torch.dtype) -> int:
    """K and V (MLA: latent) bytes of one block in all layers of a model with this ModelConfig."""
    element = torch.empty((), dtype=dtype).element_size()
    return config.n_layers * block_size * kv_layout(config).values_per_token * element


def num_blocks_for_budget(config, block_size: int, dtype: torch.dtype, kv_cache_gb: float) -> int:
    """How many blocks fit in kv_cache_gb GiB (error when not even one does)."""
    if isinstance(kv_cache_gb, bool) or not isinstance(kv_cache_gb, (int, float)) or not (
        kv_cache_gb > 0
    ):  # fmt: skip
        raise LLMInternalsError(f"kv_cache_gb must be a positive number, got {kv_cache_gb!r}")
    per_block = bytes_per_block(config, block_size, dtype)
    count = int(kv_cache_gb * GIB // per_block)
    if count < 1:
        raise LLMInternalsError(
            f"kv_cache_gb={kv_cache_gb} holds no block: one block of {block_size} tokens needs "
            f"{per_block} bytes",
            hint="raise kv_cache_gb or lower block_size",
        )
    return count


class PagedKVCache:
    """The pool of KV blocks for every layer of one model."""

    def __init__(
        self,
        n_layers: int,
        num_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        latent_value_dim: int | None = None,
    ) -> None:
        for name, value in (("n_layers", n_layers), ("num_blocks", num_blocks),
                            ("block_size", block_size), ("n_kv_heads", n_kv_heads),
                            ("head_dim", head_dim)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMInternalsError(
                    f"paged KV cache: {name} must be a positive integer, got {value!r}"
                )
        if latent_value_dim is not None and not (
            isinstance(latent_value_dim, int) and 0 < latent_value_dim <= head_dim
        ):
            raise LLMInternalsError(
                f"paged KV cache: latent_value_dim must be an integer in 1..head_dim={head_dim}, "
                f"got {latent_value_dim!r}"
            )
        shape = (n_kv_heads, num_blocks, block_size, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        # MLA: values are the keys' first latent_value_dim features, not stored on their own.
        self.latent_value_dim = latent_value_dim
        values = n_layers if latent_value_dim is None else 0
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(values)]
        self.value_dim = head_dim if latent_value_dim is None else latent_value_dim
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self._gather_buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        block_size: int,
        num_blocks: int | None = None,
        kv_cache_gb: float | None = None,
    ) -> PagedKVCache:
        """A pool shaped for `model`, of num_blocks blocks or as many as kv_cache_gb holds."""
        config = model.config
        weight = next(model.parameters())
        if (num_blocks is None) == (kv_cache_gb is None):
            raise LLMInternalsError("give exactly one of num_blocks and kv_cache_gb")
        if num_blocks is None:
            num_blocks = num_blocks_for_budget(config, block_size, weight.dtype, kv_cache_gb)
        layout = kv_layout(config)
        return cls(config.n_layers, num_blocks, block_size, layout.n_kv_heads, layout.key_dim,
                   dtype=weight.dtype, device=weight.device,
                   latent_value_dim=layout.latent_value_dim)  # fmt: skip

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def write(
        self, layer_idx: int, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """Store new k, v (n_kv_heads, tokens, head_dim) into their slots (MLA: k only, v is
        its first latent_value_dim features)."""
        shape = (self.n_kv_heads, -1, self.head_dim)
        self.keys[layer_idx].view(shape).index_copy_(1, slot_mapping, k)
        if self.latent_value_dim is None:
            self.values[layer_idx].view(shape).index_copy_(1, slot_mapping, v)

    def gather(self, layer_idx: int, block_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the blocks block_ids (rows, blocks), laid out by position, heads first:
        (n_kv_heads, rows, blocks * block_size, head_dim) each, contiguous (views of a reused
        buffer, valid until the next gather). MLA: the values are a view of the keys' first
        latent_value_dim features."""
        rows, blocks = block_ids.shape
        keys, values = self._workspace(rows * blocks)
        torch.index_select(self.keys[layer_idx], 1, block_ids.reshape(-1), out=keys)
        shape = (self.n_kv_heads, rows, blocks * self.block_size, self.head_dim)
        if self.latent_value_dim is not None:
            return keys.view(shape), keys.view(shape)[..., : self.latent_value_dim]
        torch.index_select(self.values[layer_idx], 1, block_ids.reshape(-1), out=values)
        return keys.view(shape), values.view(shape)

    def read_blocks(self, block_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the K and V of blocks block_ids in every layer, read with `gather` (what
        attention reads) and laid out in the order given: (n_layers, n_kv_heads,
        len(block_ids) * block_size, head_dim) each. For snapshots and lessons, not hot paths."""
        outside = [b for b in block_ids if not 0 <= b < self.num_blocks]
        if outside:
            raise LLMInternalsError(
                f"paged KV cache: block ids {outside} outside 0..{self.num_blocks - 1}"
            )
        ids = torch.tensor([list(block_ids)], dtype=torch.long, device=self.keys[0].device)
        keys, values = [], []
        for layer in range(self.n_layers):
            k, v = self.gather(layer, ids)
            keys.append(k[:, 0].clone())
            values.append(v[:, 0].clone())
        return torch.stack(keys), torch.stack(values)

    def gather_keys(self, layer_idx: int, block_ids: torch.Tensor) -> torch.Tensor:
        """Only the keys of `gather`: (n_kv_heads, rows, blocks * block_size, head_dim)."""
        rows, blocks = block_ids.shape
        keys, _ = self._workspace(rows * blocks)
        torch.index_select(self.keys[layer_idx], 1, block_ids.reshape(-1), out=keys)
        return keys.view(self.n_kv_heads, rows, blocks * self.block_size, self.head_dim)

    def value_rows(self, slots: torch.Tensor, n_rep: int) -> torch.Tensor:
        """Row indices into the values viewed as (n_kv_heads * slots, head_dim) for the bags of
        `weighted_values`: bag (head g, row b, repeat r) lists g * num_slots + slots[b, j]."""
        num_slots = self.num_blocks * self.block_size
        heads = torch.arange(self.n_kv_heads, device=slots.device)[:, None, None, None]
        rows = heads * num_slots + slots[None, :, None, :]
        return rows.expand(self.n_kv_heads, slots.shape[0], n_rep, slots.shape[1]).reshape(-1)

    def weighted_values(
        self, layer_idx: int, value_rows: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """sum_j weights[..., j] * V[slot j] for every (head, row, repeat) of weights
        (n_kv_heads, rows, n_rep, keys), reading the value rows straight from the pool: the
        gather and the weighted sum in one pass (embedding_bag), no gathered copy of V.
        MLA: the sum runs over whole latent rows and keeps the first latent_value_dim features.
        Output (n_kv_heads, rows, n_rep, value_dim)."""
        stored = self.keys if self.latent_value_dim is not None else self.values
        table = stored[layer_idx].view(-1, self.head_dim)
        keys = weights.shape[-1]
        offsets = torch.arange(0, value_rows.numel(), keys, device=weights.device)
        summed = torch.nn.functional.embedding_bag(
            value_rows, table, offsets, mode="sum", per_sample_weights=weights.reshape(-1)
        )
        return summed[:, : self.value_dim].reshape(*weights.shape[:-1], self.value_dim)

    def _workspace(self, blocks: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reused output buffers for gathers: a fresh multi-MB tensor per layer would cost a
        page fault per 4 KB on first touch (measured: most of the gather time). Made outside
        inference mode, like the pool, so that gathers work both inside and outside it.
        MLA pools gather no values (None)."""
        size = self.n_kv_heads * blocks * self.block_size * self.head_dim
        value_size = size if self.latent_value_dim is None else 0
        if self._gather_buffers is None or self._gather_buffers[0].numel() < size:
            like = self.keys[0]
            with torch.inference_mode(False):
                self._gather_buffers = (like.new_empty(size), like.new_empty(value_size))
        shape = (self.n_kv_heads, blocks, self.block_size, self.head_dim)
        keys, values = self._gather_buffers
        return keys[:size].view(shape), values[:size].view(shape) if value_size else None

    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy whole blocks source -> destination in every layer (copy-on-write)."""
        if not pairs:
            return
        device = self.keys[0].device
        source = torch.tensor([s for s, _ in pairs], device=device)
        destination = torch.tensor([d for _, d in pairs], device=device)
        for store in (self.keys, self.values):
            for buffer in store:
                buffer.index_copy_(1, destination, buffer.index_select(1, source))
