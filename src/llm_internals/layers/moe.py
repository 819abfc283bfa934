"""A mixture-of-experts feed-forward layer: router, routed SwiGLU experts, shared experts.

    y = sum_{j<k} w_j(x) Expert_{idx_j(x)}(x)  +  g(x) * Shared(x)

The router (moe_router.py) picks k of E experts per token and their weights; dispatch
(moe_dispatch.py) runs each expert on its tokens; shared experts see every token (DeepSeek's are
plain, g = 1; Qwen2-MoE's one is scaled by g = sigmoid(w_g . x), `shared_expert_gate`). Each
expert is one SwiGLU FFN (layers/ffn.py GatedMLP) of width `d_expert`; only k of them run per
token, so the layer holds E times the FFN parameters for about k times the FFN compute.

After each forward `last_routing` holds the routing (logits for the balancing losses, expert
ids for the load) and `last_dropped` the number of (token, expert) pairs over capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.ffn import GatedMLP
from llm_internals.layers.moe_dispatch import (
    DISPATCH_MODES,
    DISPATCHERS,
    capacity_keep_mask,
    expert_capacity,
)
from llm_internals.layers.moe_router import ROUTER_TYPES, Router, Routing
from llm_internals.trace import record


@dataclass
class MoEConfig:
    """The shape and routing rule of one MoE layer (field names follow the HF configs)."""

    d_model: int
    d_expert: int  # moe_intermediate_size (intermediate_size for Mixtral)
    n_experts: int  # num_local_experts / num_experts / n_routed_experts
    top_k: int  # num_experts_per_tok
    router: str = "topk_softmax"
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    n_shared_experts: int = 0
    d_shared: int | None = None  # width of the shared FFN; default n_shared_experts * d_expert
    shared_expert_gate: bool = False
    dispatch: str = "sorted"
    capacity_factor: float | None = None  # None: no capacity limit, nothing dropped
    activation: str = "silu"

    def validate(self) -> MoEConfig:
        """Raise one LLMInternalsError naming the first bad field and its value."""
        hint = "fix the MoE fields of the model's config.json"
        if self.router not in ROUTER_TYPES:
            raise LLMInternalsError(
                f"router {self.router!r} is not known; choose one of {', '.join(ROUTER_TYPES)}",
                hint,
            )
        if self.dispatch not in DISPATCH_MODES:
            raise LLMInternalsError(
                f"dispatch {self.dispatch!r} is not known; "
                f"choose one of {', '.join(DISPATCH_MODES)}",
                hint,
            )
        if self.n_experts < 1 or not 1 <= self.top_k <= self.n_experts:
            raise LLMInternalsError(
                f"num_experts_per_tok = {self.top_k} must be between 1 and the number of experts "
                f"(n_experts = {self.n_experts})",
                hint,
            )
        if self.n_group < 1 or self.n_experts % self.n_group:
            raise LLMInternalsError(
                f"n_group = {self.n_group} does not divide the {self.n_experts} experts", hint
            )
        if not 1 <= self.topk_group <= self.n_group:
            raise LLMInternalsError(
                f"topk_group = {self.topk_group} must be between 1 and n_group = {self.n_group}",
                hint,
            )
        if (
            self.router == "sigmoid_grouped"
            and self.topk_group * self.n_experts // self.n_group < self.top_k
        ):
            raise LLMInternalsError(
                f"num_experts_per_tok = {self.top_k} exceeds the experts of the kept groups "
                f"(topk_group = {self.topk_group} of n_group = {self.n_group}, "
                f"{self.n_experts} experts)",
                hint,
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise LLMInternalsError(f"capacity_factor = {self.capacity_factor} must be > 0", hint)
        return self


class MoELayer(nn.Module):
    """Router + E routed SwiGLU experts + optional shared experts, over [..., d_model] inputs."""

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = config.validate()
        self.router = Router(
            config.d_model,
            config.n_experts,
            config.top_k,
            kind=config.router,
            norm_topk_prob=config.norm_topk_prob,
            n_group=config.n_group,
            topk_group=config.topk_group,
            routed_scaling_factor=config.routed_scaling_factor,
        )
        self.experts = nn.ModuleList(
            GatedMLP(config.d_model, config.d_expert, activation=config.activation)
            for _ in range(config.n_experts)
        )
        d_shared = config.d_shared or config.n_shared_experts * config.d_expert
        self.shared = GatedMLP(config.d_model, d_shared, config.activation) if d_shared else None
        self.shared_gate = (
            nn.Linear(config.d_model, 1, bias=False) if config.shared_expert_gate else None
        )
        self.last_routing: Routing | None = None
        self.last_dropped = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        routing = self.router(tokens)
        keep = None
        if self.config.capacity_factor is not None:
            capacity = expert_capacity(
                self.config.capacity_factor,
                tokens.shape[0],
                self.config.top_k,
                self.config.n_experts,
            )
            keep = capacity_keep_mask(routing.indices, self.config.n_experts, capacity)
        self.last_routing = routing
        self.last_dropped = 0 if keep is None else int((~keep).sum())
        out = DISPATCHERS[self.config.dispatch](
            tokens, self.experts, routing.indices, routing.weights, keep
        )
        record(
            "moe_routed", out, note=f"{self.config.dispatch} dispatch, {self.last_dropped} dropped"
        )
        if self.shared is not None:
            shared = self.shared(tokens)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(tokens)) * shared
            out = out + shared
        return out.reshape(shape)
