"""Total and active parameters, compute and memory of published models, for the `moe` lesson.

The shapes are the rows of the one table of published shapes (models/published.py); the counts
are models/params.py's (`parameter_counts`, `active_parameters`: all but the routed experts a
token's top-k leaves idle, embeddings included, as the published "37B activated" figures do).
A forward pass costs about 2 FLOPs (one multiply-add) per weight a token is multiplied by:
2 x (active - the embedding table, which is read, not multiplied) per token, attention scores
left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_internals.models.published import active_parameters, model_config, parameter_counts

BF16 = 2  # bytes per weight
MOE_MODELS = {"Mixtral-8x7B": "mixtral-8x7b", "Qwen1.5-MoE-A2.7B": "qwen1.5-moe-a2.7b",
              "Qwen3-30B-A3B": "qwen3-30b-a3b", "DeepSeek-V3": "deepseek-v3"}  # fmt: skip
DENSE_MODELS = {"Mistral-7B": "mistral-7b", "Llama-3-70B": "llama-3-70b",
                "Llama-3.1-405B": "llama-3.1-405b"}  # fmt: skip
PARAM_COLUMNS = ["model", "total params", "active params", "active %", "GFLOPs per token"]


@dataclass(frozen=True)
class MoEShape:
    """The MoE part of a published model's ModelConfig."""

    d_model: int
    d_expert: int
    n_experts: int
    top_k: int
    router: str
    moe_layers: int

    @property
    def expert_parameters(self) -> int:
        """One SwiGLU expert: W_gate, W_up (d x d_expert) and W_down."""
        return 3 * self.d_model * self.d_expert


def moe_shape(name: str) -> MoEShape:
    """The experts of MOE_MODELS[name], read from its ModelConfig's `moe` fields."""
    config = model_config(MOE_MODELS[name])
    moe = config.moe
    moe_layers = config.n_layers - len(moe.get("dense_layers", []))
    return MoEShape(config.d_model, moe["d_expert"], moe["n_experts"], moe["top_k"],
                    moe["router"], moe_layers)  # fmt: skip


def counts(name: str) -> dict[str, int]:
    """{"total", "active", "lookup" (the embedding table), "experts" (all routed experts),
    "experts_active" (the k a token uses)} of a MOE_MODELS or DENSE_MODELS entry."""
    alias = MOE_MODELS.get(name) or DENSE_MODELS[name]
    components = parameter_counts(alias)
    result = {"total": components["total"], "active": active_parameters(alias),
              "lookup": components["embeddings"], "experts": 0, "experts_active": 0}  # fmt: skip
    if name in MOE_MODELS:
        shape = moe_shape(name)
        per_layer = shape.moe_layers * shape.expert_parameters
        result["experts"], result["experts_active"] = (
            per_layer * shape.n_experts,
            (per_layer * shape.top_k),
        )
    return result


def forward_flops_per_token(parameters: int, lookup: int) -> int:
    """2 FLOPs per weight multiplied: 2 x (parameters - the embedding lookup)."""
    return 2 * (parameters - lookup)


def param_row(name: str) -> list:
    """A PARAM_COLUMNS row."""
    c = counts(name)
    flops = forward_flops_per_token(c["active"], c["lookup"])
    return [name, c["total"], c["active"], 100 * c["active"] / c["total"], flops / 1e9]


def memory_rows(names: tuple[str, ...]) -> list[list]:
    """bf16 bytes of all weights, of the weights one token reads, and of the all-to-all traffic
    per token: its hidden vector (d values) to each of its k experts and back, every MoE layer."""
    rows = []
    for name in names:
        c, shape = counts(name), moe_shape(name)
        traffic = 2 * shape.top_k * shape.d_model * BF16 * shape.moe_layers
        rows.append([name, BF16 * c["total"], BF16 * c["active"], traffic])
    return rows


EXPERT_COLUMNS = ["model", "d_model", "expert width", "params per expert", "experts per layer"]
MEMORY_COLUMNS = ["model", "weights bytes", "weights read per token bytes",
                  "all-to-all bytes per token"]  # fmt: skip


def expert_rows(ours: list) -> list[list]:
    """`ours` (a row of EXPERT_COLUMNS), then each of MOE_MODELS' expert shape."""
    rows = [ours]
    for name in MOE_MODELS:
        shape = moe_shape(name)
        rows.append([name, shape.d_model, shape.d_expert, shape.expert_parameters,
                     shape.n_experts])  # fmt: skip
    return rows
