"""Several LoRA adapters in one batch: each token row uses its own (multi-LoRA serving).

A serving engine packs the tokens of many requests into one forward; with adapters, request j
wants h = W x + s_j B_j A_j x for its rows. Every adapted linear layer becomes a
MultiLoraLinear holding all adapters; before a forward the engine says which adapter each token
row uses (`MultiLora.rows(ids)`, 0 = the base alone), and each layer adds, per adapter present
in the batch, the low-rank update of that adapter's rows only:

    out = x W^T                                   every row, one matmul
    out[rows_j] += s_j (x[rows_j] A_j^T) B_j^T     one small pair of matmuls per adapter used

Grouping rows by adapter (rather than gathering an A and B per row) keeps the work at
r (in + out) per row plus one pair of matmul launches per distinct adapter in the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from llm_internals.adapters.inject import lora_layers, replace_module
from llm_internals.adapters.peft_format import load_adapter
from llm_internals.errors import LLMInternalsError


class AdapterRows:
    """The adapter id of every token row of the next forward (shared by all layers of a model)."""

    def __init__(self) -> None:
        self.ids: torch.Tensor | None = None


class MultiLoraLinear(nn.Module):
    """A frozen base linear plus adapters 1..n (frozen), chosen per token row by `rows.ids`."""

    def __init__(self, base: nn.Module, rows: AdapterRows) -> None:
        super().__init__()
        self.base, self.rows = base, rows
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_A = nn.ParameterDict()  # adapter id (as text) -> A (r, in)
        self.lora_B = nn.ParameterDict()  # adapter id -> s * B (out, r): scaling folded in

    def add(self, adapter_id: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        self.lora_A[str(adapter_id)] = nn.Parameter(a.detach().clone(), requires_grad=False)
        self.lora_B[str(adapter_id)] = nn.Parameter(b.detach() * scaling, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        ids = self.rows.ids
        if ids is None or not len(self.lora_A):
            return out
        flat_x = x.reshape(-1, self.in_features)
        if ids.shape != (flat_x.shape[0],):
            raise ValueError(f"adapter ids for {ids.shape} rows, but the input has "
                             f"{flat_x.shape[0]} token rows")  # fmt: skip
        flat_out = out.reshape(-1, self.out_features).clone()
        for adapter_id in ids.unique().tolist():
            key = str(adapter_id)
            if key not in self.lora_A:  # 0 (the base) or an adapter that skips this layer
                continue
            rows = (ids == adapter_id).nonzero().squeeze(1)
            a, b = self.lora_A[key], self.lora_B[key]
            update = (flat_x[rows].to(a.dtype) @ a.T) @ b.T
            flat_out.index_add_(0, rows, update.to(flat_out.dtype))
        return flat_out.view(out.shape)


class MultiLora:
    """The adapters a model serves, by name (id 1..n in order; 0 means "no adapter")."""

    def __init__(self, names: Sequence[str], rows: AdapterRows) -> None:
        self.names = list(names)
        self._rows = rows

    def adapter_id(self, name: str | None) -> int:
        if name is None:
            return 0
        if name not in self.names:
            raise LLMInternalsError(
                f"adapter {name!r} is not loaded (loaded: {', '.join(self.names) or 'none'})",
                hint="start the server with --lora NAME=DIR for each adapter",
            )
        return self.names.index(name) + 1

    @contextlib.contextmanager
    def rows(self, ids: torch.Tensor | None) -> Iterator[None]:
        """Within the block, token row i of every forward uses adapter ids[i]."""
        self._rows.ids = ids
        try:
            yield
        finally:
            self._rows.ids = None


def attach_adapters(model: nn.Module, adapters: dict[str, str | Path]) -> MultiLora:
    """Load each adapter folder (name -> DIR) into `model` for per-row use; the model then runs
    its base alone unless `model.multi_lora.rows(ids)` says otherwise."""
    if not adapters:
        raise LLMInternalsError("no adapters given", hint="--lora NAME=DIR (repeatable)")
    for name, directory in adapters.items():
        load_adapter(model, directory, name=name)
    registry = MultiLora(list(adapters), AdapterRows())
    for path, layer in lora_layers(model).items():
        multi = MultiLoraLinear(layer.base, registry._rows)
        for name in layer.settings:
            a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
            multi.add(registry.adapter_id(name), a, b, layer.settings[name].scaling)
        replace_module(model, path, multi.to(a.device))
    model.multi_lora = registry
    return registry


def check_adapter(model: nn.Module, name: str | None) -> None:
    """Refuse a request for an adapter the model does not serve (before it is queued)."""
    if name is None:
        return
    multi = getattr(model, "multi_lora", None)
    if multi is None:
        raise LLMInternalsError(
            f"adapter {name!r} was requested but this model serves no adapters",
            hint="start the server with --lora NAME=DIR for each adapter",
        )
    multi.adapter_id(name)


def adapter_rows(model: nn.Module, row_owners: Sequence) -> contextlib.AbstractContextManager:
    """For a serving engine: inside the block, token row i uses the adapter its owner's
    SamplingParams name (`params.adapter`; None: the base). A no-op for a model without
    adapters."""
    multi = getattr(model, "multi_lora", None)
    if multi is None:
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    ids = [multi.adapter_id(getattr(seq.params, "adapter", None)) for seq in row_owners]
    return multi.rows(torch.tensor(ids, dtype=torch.long, device=device))
