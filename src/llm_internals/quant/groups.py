"""How a weight is cut into the groups that share one scale: per tensor, per output channel (a
row of the [out, in] weight), or per group of `g` consecutive inputs within a row.

Every quantiser works on the view [rows, n_groups, group] and keeps one scale per (row, group).
"""

from __future__ import annotations

import torch

from llm_internals.errors import LLMInternalsError

Granularity = int | str  # "tensor", "channel", or a group size along the input width


def to_groups(weight: torch.Tensor, granularity: Granularity, name: str) -> torch.Tensor:
    """`weight` viewed as [rows, n_groups, group] for `granularity`."""
    if granularity == "tensor":
        return weight.reshape(1, 1, -1)
    if weight.dim() != 2:
        raise LLMInternalsError(
            f"tensor {name!r} has shape {tuple(weight.shape)}; per-channel and per-group "
            "quantisation needs a 2-D [out, in] weight"
        )
    rows, width = weight.shape
    if granularity == "channel":
        return weight.reshape(rows, 1, width)
    if not isinstance(granularity, int) or granularity <= 0 or width % granularity:
        raise LLMInternalsError(
            f"tensor {name!r} of shape {tuple(weight.shape)}: group size {granularity} does not "
            f"divide its input width {width}",
            hint="choose a --scheme whose group size divides every layer's width "
            "(e.g. int4-g32 instead of int4-g128), or int8 (per channel)",
        )
    return weight.reshape(rows, width // granularity, granularity)


def from_groups(grouped: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return grouped.reshape(shape)


def group_absmax(groups: torch.Tensor) -> torch.Tensor:
    """max |w| per group, [rows, n_groups]."""
    return groups.abs().amax(dim=-1)
