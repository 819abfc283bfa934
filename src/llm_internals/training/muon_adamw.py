"""Muon for hidden matrices, AdamW for everything else: the split by parameter role.

Roles, decided from the module that owns each parameter (tied weights are counted once):

    embedding     a lookup table (token or position): nn.Embedding or a module whose class
                  name ends in "Embedding"                                -> AdamW
    output head   the LM head (or the embedding it is tied to)            -> AdamW
    vector        1D tensors: norm gains, biases                          -> AdamW
    hidden matrix every other 2D weight (attention and MLP projections)   -> Muon

See `muon.py` for why only hidden matrices are orthogonalized.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.training.adamw import AdamW
from llm_internals.training.muon import Muon

HIDDEN_MATRIX = "hidden matrix"
EMBEDDING = "embedding"
OUTPUT_HEAD = "output head"
VECTOR = "vector"
OTHER = "other"
MUON_ROLES = (HIDDEN_MATRIX,)


@dataclass(frozen=True)
class ParamRole:
    name: str
    param: nn.Parameter
    role: str

    @property
    def optimizer(self) -> str:
        return "Muon" if self.role in MUON_ROLES else "AdamW"


def _output_head_params(model: nn.Module, head_names: tuple[str, ...]) -> set[int]:
    ids: set[int] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        head = get_out()
        if head is not None:
            ids.update(id(p) for p in head.parameters())
    for name, module in model.named_modules():
        if name.split(".")[-1] in head_names:
            ids.update(id(p) for p in module.parameters())
    return ids


def _is_embedding(module: nn.Module) -> bool:
    """torch's embedding modules, and lookup tables named like one (TokenEmbedding,
    LearnedPositionalEmbedding in `layers/`)."""
    return isinstance(module, nn.Embedding | nn.EmbeddingBag) or type(module).__name__.endswith(
        "Embedding"
    )


def split_params_by_role(
    model: nn.Module, head_names: tuple[str, ...] = ("lm_head", "head")
) -> list[ParamRole]:
    """Every trainable parameter of `model` with its role (see the module docstring)."""
    embedding_ids = {id(p) for m in model.modules() if _is_embedding(m) for p in m.parameters()}
    head_ids = _output_head_params(model, head_names)
    roles = []
    for name, param in model.named_parameters():  # yields a tied parameter once
        if not param.requires_grad:
            continue
        if id(param) in embedding_ids:
            role = EMBEDDING
        elif id(param) in head_ids:
            role = OUTPUT_HEAD
        elif param.ndim == 1:
            role = VECTOR
        elif param.ndim == 2:
            role = HIDDEN_MATRIX
        else:
            role = OTHER
        roles.append(ParamRole(name, param, role))
    return roles


class MuonWithAdamW:
    """One optimizer object driving Muon (hidden matrices) and AdamW (the rest) together.

    `param_groups` lists both optimizers' groups (Muon's first) so a learning-rate schedule can
    scale every group; `state_dict` / `load_state_dict` round-trip both.
    """

    def __init__(
        self,
        model: nn.Module,
        muon_lr: float = 0.02,
        adamw_lr: float = 3e-4,
        muon_kwargs: dict[str, Any] | None = None,
        adamw_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.roles = split_params_by_role(model)
        muon_params = [r.param for r in self.roles if r.optimizer == "Muon"]
        adamw_params = [r.param for r in self.roles if r.optimizer == "AdamW"]
        self.muon = Muon(muon_params, lr=muon_lr, **(muon_kwargs or {})) if muon_params else None
        self.adamw = (
            AdamW(adamw_params, lr=adamw_lr, **(adamw_kwargs or {})) if adamw_params else None
        )

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.muon, self.adamw) if opt is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "muon": self.muon.state_dict() if self.muon else None,
            "adamw": self.adamw.state_dict() if self.adamw else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, opt in (("muon", self.muon), ("adamw", self.adamw)):
            if (opt is None) != (state.get(key) is None):
                raise LLMInternalsError(
                    f"optimizer state has {'no' if state.get(key) is None else 'a'} {key} part "
                    f"but this model {'has' if opt else 'has no'} {key} parameters"
                )
            if opt is not None:
                opt.load_state_dict(state[key])
