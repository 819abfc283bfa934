"""Total and active parameters of published mixture-of-experts models, from config.json fields.

For the `moe` lesson. The fields are those of each model's public config.json (HF names); the
counts follow the HF model classes (MixtralForCausalLM, Qwen2MoeForCausalLM,
Qwen3MoeForCausalLM, DeepseekV3ForCausalLM; the test compares them on the meta device):

    per layer    attention + 2 norms of d + FFN
    FFN          dense layer: 3 d f;  MoE layer: E x 3 d f_e (experts) + E d (router)
                 + 3 d f_s (shared experts) + d (Qwen2-MoE's shared-expert gate)
    attention    GQA: d H h + 2 d G h + H h d (+ q/k/v biases, + 2h of QK-norm)
                 MLA: W_DQ, its norm, W_UQ, W_DKV (latent + rope key), its norm, W_UKV, W_O
    model        vocab d embeddings + vocab d head (untied) + d final norm

"Active" counts what one token uses: k of the E routed experts, everything else whole (the
embeddings included, as the published "37B activated" figures do). A forward pass costs about
2 FLOPs (one multiply-add) per weight a token is multiplied by: 2 x (active - the embedding
lookup) per token, attention scores left out.
"""

from __future__ import annotations

from typing import Any

from llm_internals.models.published import parameter_counts

BF16 = 2  # bytes per weight
MOE_MODELS: dict[str, dict[str, Any]] = {
    "Mixtral-8x7B": {
        "model_type": "mixtral", "router": "topk_softmax", "vocab_size": 32000,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "num_experts_per_tok": 2, "tie_word_embeddings": False,
    },
    "Qwen1.5-MoE-A2.7B": {
        "model_type": "qwen2_moe", "router": "softmax_topk", "vocab_size": 151936,
        "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
        "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
        "num_experts_per_tok": 4, "norm_topk_prob": False, "tie_word_embeddings": False,
    },
    "Qwen3-30B-A3B": {
        "model_type": "qwen3_moe", "router": "softmax_topk", "vocab_size": 151936,
        "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True,
        "tie_word_embeddings": False,
    },
    "DeepSeek-V3": {
        "model_type": "deepseek_v3", "router": "sigmoid_grouped", "vocab_size": 129280,
        "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "first_k_dense_replace": 3, "num_attention_heads": 128,
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
        "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "tie_word_embeddings": False,
    },
}  # fmt: skip


def n_experts(f: dict[str, Any]) -> int:
    """Routed experts, whatever the family calls them."""
    return f.get("num_local_experts") or f.get("num_experts") or f["n_routed_experts"]


def expert_width(f: dict[str, Any]) -> int:
    """Hidden width of one routed expert (Mixtral's experts are full-width FFNs)."""
    return f.get("moe_intermediate_size") or f["intermediate_size"]


def attention_parameters(f: dict[str, Any]) -> int:
    """One layer's attention weights (GQA or MLA), norms excluded."""
    d, heads = f["hidden_size"], f["num_attention_heads"]
    if "kv_lora_rank" in f:  # Multi-head latent attention
        q_head = f["qk_nope_head_dim"] + f["qk_rope_head_dim"]
        q_lora, kv_lora = f["q_lora_rank"], f["kv_lora_rank"]
        query = d * q_lora + q_lora + q_lora * heads * q_head
        kv = d * (kv_lora + f["qk_rope_head_dim"]) + kv_lora
        kv += kv_lora * heads * (f["qk_nope_head_dim"] + f["v_head_dim"])
        return query + kv + heads * f["v_head_dim"] * d
    h = f.get("head_dim") or d // heads
    q, kv = heads * h, f["num_key_value_heads"] * h
    count = d * q + 2 * d * kv + q * d
    if f["model_type"] == "qwen2_moe":
        count += q + 2 * kv  # q/k/v biases
    if f["model_type"] == "qwen3_moe":
        count += 2 * h  # QK-norm
    return count


def moe_parameter_counts(f: dict[str, Any]) -> dict[str, int]:
    """{"embeddings", "attention", "experts", "experts_active", "other", "total", "active"} of a
    config's fields ("other": routers, shared experts, dense FFN layers and norms)."""
    d, layers = f["hidden_size"], f["num_hidden_layers"]
    dense_layers = f.get("first_k_dense_replace", 0)
    moe_layers = layers - dense_layers
    expert = 3 * d * expert_width(f)
    shared = (
        3
        * d
        * (
            f.get("shared_expert_intermediate_size")
            or f.get("n_shared_experts", 0) * expert_width(f)
        )
    )
    shared_gate = d if f["model_type"] == "qwen2_moe" else 0
    embeddings = f["vocab_size"] * d * (1 if f["tie_word_embeddings"] else 2)
    other = moe_layers * (n_experts(f) * d + shared + shared_gate)
    other += dense_layers * 3 * d * f["intermediate_size"] + layers * 2 * d + d
    counts = {
        "embeddings": embeddings,
        "attention": layers * attention_parameters(f),
        "experts": moe_layers * n_experts(f) * expert,
        "experts_active": moe_layers * f["num_experts_per_tok"] * expert,
        "other": other,
    }
    shared_part = counts["embeddings"] + counts["attention"] + counts["other"]
    counts["total"] = shared_part + counts["experts"]
    counts["active"] = shared_part + counts["experts_active"]
    return counts


def embedding_lookup(f: dict[str, Any]) -> int:
    """The input embedding table, vocab x d: read once per token, never multiplied."""
    return f["vocab_size"] * f["hidden_size"]


def forward_flops_per_token(active: int, lookup: int) -> int:
    """About 2 FLOPs (a multiply-add) per weight a token is multiplied by: 2 x (active - lookup),
    where `lookup` is the embedding table (read, not multiplied; the output head is a matmul)."""
    return 2 * (active - lookup)


PARAM_COLUMNS = ["model", "total params", "active params", "active %", "GFLOPs per token"]
DENSE_MODELS = {"Mistral-7B": "mistral-7b", "Llama-3-70B": "llama-3-70b",
                "Llama-3.1-405B": "llama-3.1-405b"}  # fmt: skip


def dense_row(name: str) -> list:
    """A PARAM_COLUMNS row of a dense published model (every parameter active)."""
    counts = parameter_counts(DENSE_MODELS[name])
    flops = forward_flops_per_token(counts["total"], counts["embeddings"])
    return [name, counts["total"], counts["total"], 100.0, flops / 1e9]


def moe_row(name: str) -> list:
    """A PARAM_COLUMNS row of a MoE model of MOE_MODELS."""
    c = moe_parameter_counts(MOE_MODELS[name])
    flops = forward_flops_per_token(c["active"], embedding_lookup(MOE_MODELS[name]))
    return [name, c["total"], c["active"], 100 * c["active"] / c["total"], flops / 1e9]


def memory_rows(names: tuple[str, ...]) -> list[list]:
    """bf16 bytes of all weights, of the weights one token reads, and of the all-to-all traffic
    per token: its hidden vector (d values) to each of its k experts and back, every MoE layer."""
    rows = []
    for name in names:
        f, c = MOE_MODELS[name], moe_parameter_counts(MOE_MODELS[name])
        moe_layers = f["num_hidden_layers"] - f.get("first_k_dense_replace", 0)
        traffic = 2 * f["num_experts_per_tok"] * f["hidden_size"] * BF16 * moe_layers
        rows.append([name, BF16 * c["total"], BF16 * c["active"], traffic])
    return rows
