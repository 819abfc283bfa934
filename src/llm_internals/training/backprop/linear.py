"""Backward passes of the two table-like layers: linear (matrix multiply) and embedding (lookup).

Linear, y = x W^T + b with x (..., in), W (out, in), b (out):

    dL/dx = dL/dy W            each input feeds every output through its weight
    dL/dW = sum_rows dL/dy^T x (one outer product per row of the batch, summed)
    dL/db = sum_rows dL/dy

Embedding, y = W[ids]: each output row is a copy of one table row, so the table's gradient is
the output gradient scattered back, with rows of repeated ids summed (index_add). A tied LM head
uses the same table as a linear layer, so the table receives both gradients, added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LinearCache:
    x: torch.Tensor
    weight: torch.Tensor
    has_bias: bool


def linear_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, LinearCache]:
    """y = x W^T + b, and what the backward pass needs."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, LinearCache(x, weight, bias is not None)


def linear_backward(
    dy: torch.Tensor, cache: LinearCache
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dL/dx, dL/dW, dL/db or None) from dL/dy."""
    dx = dy @ cache.weight
    rows_dy = dy.reshape(-1, dy.shape[-1])
    rows_x = cache.x.reshape(-1, cache.x.shape[-1])
    dweight = rows_dy.T @ rows_x
    dbias = rows_dy.sum(dim=0) if cache.has_bias else None
    return dx, dweight, dbias


def embedding_forward(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of `table` selected by integer `ids`: shape ids.shape + (dim,)."""
    return table[ids]


def embedding_backward(dy: torch.Tensor, ids: torch.Tensor, num_rows: int) -> torch.Tensor:
    """dL/dtable: dL/dy rows summed into the rows their ids selected (zeros elsewhere)."""
    dim = dy.shape[-1]
    dtable = torch.zeros(num_rows, dim, dtype=dy.dtype, device=dy.device)
    return dtable.index_add_(0, ids.reshape(-1), dy.reshape(-1, dim))
