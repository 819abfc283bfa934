"""Data-parallel training with torch.distributed: one process per worker, launched by torchrun.

Every process holds a full copy of the model. Each step, every process draws the same global
batch (same seed) and keeps only its slice of rows; DistributedDataParallel all-reduces (averages)
the gradients during backward, so every process applies the same update and the copies stay
identical. With equal slices the average of per-slice mean gradients is the full batch's mean
gradient, so N processes compute what one process would with the whole batch (up to the order
of floating-point additions). On CPU the "gloo" backend carries the all-reduce over TCP.

    torchrun --nproc-per-node 2 -m llm_internals.cli train --config configs/shakespeare-char.toml

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init_from_env` reads
them. See docs/training.md for several machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llm_internals.errors import LLMInternalsError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group: rank in [0, world_size)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's contiguous slice of a global batch's rows."""
        if rows.shape[0] % self.world_size != 0:
            raise LLMInternalsError(
                f"batch of {rows.shape[0]} rows does not split evenly over {self.world_size} "
                "processes",
                hint="make batch_size a multiple of the number of processes",
            )
        per = rows.shape[0] // self.world_size
        return rows[self.rank * per : (self.rank + 1) * per]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of `value` over all processes (itself when alone)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size


def barrier(ctx: DistributedContext) -> None:
    """Wait until every process gets here (e.g. rank 0 has written the shared token files)."""
    if ctx.enabled:
        dist.barrier()


def init_from_env(backend: str = "gloo") -> DistributedContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def wrap_model(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel when there are several processes.

    A MoE model may leave an expert without tokens on one process in a step: DDP then has to
    look for parameters without gradients (find_unused_parameters) and reduce zeros for them.
    """
    if not ctx.enabled:
        return model
    from llm_internals.training.moe_terms import moe_layers

    return torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=bool(moe_layers(model))
    )


def shutdown(ctx: DistributedContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
