"""The contiguous KV cache: keys and values of past tokens, kept so each decode step is O(1) work.

Generating token t+1 needs attention of the new query over the keys and values of all t earlier
tokens. Those keys and values do not change once computed (a causal model never lets an earlier
token see a later one), so they are stored instead of recomputed:

    per layer:  K, V  of shape (batch, n_kv_heads, max_len, head_dim), allocated once
    prefill:    the prompt's k, v go to positions [0, T)
    decode:     each step writes one position, T, T+1, ...
    attention:  reads K[:, :, :length] (a view: no copy), the filled part only

Queries are not cached: a past query was only needed to produce its own token's output, which
is already done. Every row of the batch shares one `length` (the column count); rows with shorter
prompts carry padding columns that the caller's attention_mask marks as 0 (left padding puts
them first, right padding in the middle), and the model derives positions from that mask. This
object implements the attention-cache protocol of layers/multihead.py; `update` returns mask None
so the model's causal-plus-padding mask applies.

MLA models (layers/mla.py) cache a latent instead: one "KV head" whose key is
k' = [c_kv ; k_rope] (d_c + d_r wide) and whose value is c_kv, the key's first d_c features.
With `latent_value_dim` set the cache stores the keys only and returns that slice of them as the
values: per layer (batch, 1, max_len, d_c + d_r), nothing else (inference/kv_layout.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_layout import kv_layout
from llm_internals.trace import is_recording, record


class ContiguousKVCache:
    """Preallocated per-layer K/V buffers that grow along the sequence axis."""

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        latent_value_dim: int | None = None,
    ) -> None:
        for name, value in (("n_layers", n_layers), ("batch", batch), ("n_kv_heads", n_kv_heads),
                            ("max_len", max_len), ("head_dim", head_dim)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMInternalsError(
                    f"KV cache: {name} must be a positive integer, got {value!r}"
                )
        if latent_value_dim is not None and not (
            isinstance(latent_value_dim, int) and 0 < latent_value_dim <= head_dim
        ):
            raise LLMInternalsError(
                f"KV cache: latent_value_dim must be an integer in 1..head_dim={head_dim}, "
                f"got {latent_value_dim!r}"
            )
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        # MLA: values are the keys' first latent_value_dim features, not stored on their own.
        self.latent_value_dim = latent_value_dim
        values = n_layers if latent_value_dim is None else 0
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(values)]
        self.max_len = max_len
        # Filled positions per layer. During a forward, layers before the current one are already
        # one step ahead; past_length() reports the last layer, i.e. the length before the forward.
        self.lengths = [0] * n_layers

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        batch: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> ContiguousKVCache:
        """A cache shaped for `model` (anything with a ModelConfig in `.config`), by default on
        the model's device and in its dtype; the latent layout for MLA models."""
        config = model.config
        weight = next(model.parameters())
        layout = kv_layout(config)
        return cls(
            config.n_layers,
            batch,
            layout.n_kv_heads,
            max_len,
            layout.key_dim,
            dtype=weight.dtype if dtype is None else dtype,
            device=weight.device if device is None else device,
            latent_value_dim=layout.latent_value_dim,
        )

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    def past_length(self) -> int:
        """Positions stored before the current forward (all layers agree between forwards)."""
        return self.lengths[-1]

    def nbytes(self) -> int:
        """Bytes allocated for K and V in all layers (the full max_len, filled or not); for MLA
        the latent only: n_layers x batch x max_len x (d_c + d_r) x bytes per element."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Append k, v (batch, n_kv_heads, new, head_dim) to layer `layer_idx`; return the
        filled keys and values (views of the buffers) and None (use the model's mask)."""
        start = self.lengths[layer_idx]
        end = start + k.shape[2]
        if end > self.max_len:
            raise LLMInternalsError(
                f"KV cache is full: {start} positions stored, {k.shape[2]} more do not fit in "
                f"max_len={self.max_len}",
                hint="allocate the cache with max_len >= prompt length + new tokens",
            )
        keys = self.keys[layer_idx]
        if k.shape[0] != keys.shape[0] or k.shape[1] != keys.shape[1] or (
            k.shape[3] != keys.shape[3]
        ):  # fmt: skip
            raise LLMInternalsError(
                f"KV cache holds (batch, kv_heads, _, head_dim) = ({keys.shape[0]}, "
                f"{keys.shape[1]}, _, {keys.shape[3]}), got new keys of shape {tuple(k.shape)}"
            )
        keys[:, :, start:end] = k
        if self.latent_value_dim is None:
            self.values[layer_idx][:, :, start:end] = v
        self.lengths[layer_idx] = end
        if is_recording():
            where = f"layer {layer_idx}: positions {start}..{end - 1}"
            record("kv_cache.new_k", k, note=f"{where} written")
            record("kv_cache.keys", keys[:, :, :end], note=f"layer {layer_idx}: all stored keys")
        if self.latent_value_dim is not None:
            return keys[:, :, :end], keys[:, :, :end, : self.latent_value_dim], None
        return keys[:, :, :end], self.values[layer_idx][:, :, :end], None

    def select_rows(self, rows: Sequence[int] | torch.Tensor) -> None:
        """Keep only these batch rows, in this order (drop sequences that finished)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.keys[0].device)
        if index.numel() == 0:
            raise LLMInternalsError("KV cache: select_rows needs at least one row")
        if int(index.min()) < 0 or int(index.max()) >= self.batch:
            raise LLMInternalsError(
                f"KV cache: row index out of range for a batch of {self.batch}: {index.tolist()}"
            )
        length = self.past_length()
        for store in (self.keys, self.values):
            for i, buffer in enumerate(store):
                kept = torch.empty(
                    (len(index), *buffer.shape[1:]), dtype=buffer.dtype, device=buffer.device
                )
                kept[:, :, :length] = buffer[index, :, :length]  # copy only the filled part
                store[i] = kept

    def truncate(self, length: int) -> None:
        """Roll back to the first `length` positions (speculative decoding drops the K/V of
        rejected draft tokens): later positions are forgotten and will be overwritten."""
        if isinstance(length, bool) or not isinstance(length, int) or not (
            0 <= length <= self.past_length()
        ):  # fmt: skip
            raise LLMInternalsError(
                f"KV cache: can only truncate to a length in [0, {self.past_length()}], "
                f"got {length!r}"
            )
        self.lengths = [length] * self.n_layers

    def gather_columns(self, index: torch.Tensor) -> None:
        """Rearrange each row's stored positions: row r keeps columns index[r, 0..m-1], in that
        order, as its new positions 0..m-1 (index: (batch, m) long). Used to squeeze out the
        holes that speculative decoding leaves when rows accept different numbers of tokens."""
        if index.dim() != 2 or index.shape[0] != self.batch or index.shape[1] > self.max_len:
            raise LLMInternalsError(
                f"KV cache: gather_columns needs a (batch={self.batch}, m <= {self.max_len}) "
                f"index, got {tuple(index.shape)}"
            )
        length = self.past_length()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= length):
            raise LLMInternalsError(f"KV cache: column index outside the {length} stored ones")
        m = index.shape[1]
        for store in (self.keys, self.values):
            for buffer in store:
                gather = index.to(buffer.device)[:, None, :, None].expand(
                    -1, buffer.shape[1], -1, buffer.shape[3]
                )
                buffer[:, :, :m] = buffer[:, :, :length].gather(2, gather)
        self.lengths = [m] * self.n_layers

    def reset(self) -> None:
        """Forget everything stored (the buffers are reused)."""
        self.lengths = [0] * self.n_layers
