"""Parameter counts by component, from a config alone (no weights needed, so Llama-3-8B is free).

Per layer, with d = d_model, h = head_dim, H = n_heads, G = n_kv_heads, f = d_ff:
    attention  d*H*h (W_q) + 2*d*G*h (W_k, W_v) + H*h*d (W_o)     (+ biases)
    ffn        2*d*f (MLP) or 3*d*f (gated: gate, up, down)        (+ biases)
    norms      d per RMSNorm, 2d per LayerNorm (weight and bias), 2h for Qwen3's QK-norm
embeddings = vocab*d (+ max_seq_len*d for learned positions); the output head adds vocab*d
unless tied to the embedding.
"""

from __future__ import annotations

from torch import nn

from llm_internals.models.config import ModelConfig

COMPONENTS = ("embeddings", "attention", "ffn", "norms", "lm_head")


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """{component: count} for COMPONENTS, plus "total"."""
    d, h, f = config.d_model, config.head_dim, config.d_ff
    q_width, kv_width = config.n_heads * h, config.n_kv_heads * h
    embeddings = config.vocab_size * d
    if config.position == "learned":
        embeddings += config.max_seq_len * d
    attention = d * q_width + 2 * d * kv_width + q_width * d
    if config.qkv_bias:
        attention += q_width + 2 * kv_width
    if config.attn_out_bias:
        attention += d
    n_mats = 3 if config.ffn == "gated" else 2
    ffn = n_mats * d * f
    if config.mlp_bias:
        ffn += (n_mats - 1) * f + d
    norm_size = 2 * d if config.norm == "layernorm" else d
    layer_norms = 2 * norm_size + (2 * h if config.qk_norm else 0)
    final_norm = norm_size if config.norm_position == "pre" else 0
    counts = {
        "embeddings": embeddings,
        "attention": attention * config.n_layers,
        "ffn": ffn * config.n_layers,
        "norms": layer_norms * config.n_layers + final_norm,
        "lm_head": 0 if config.tie_embeddings else config.vocab_size * d,
    }
    counts["total"] = sum(counts.values())
    return counts


def _component(name: str) -> str:
    if name.startswith(("tok_emb.", "pos_emb.", "type_emb.", "src_emb.", "tgt_emb.")):
        return "embeddings"
    if name.startswith(("lm_head.", "mlm_dense.", "mlm_norm.", "lm_bias")):
        return "lm_head"
    norm_parts = (".norm1.", ".norm2.", ".norm3.")
    if "_norm." in name or name.startswith("norm_f.") or any(p in name for p in norm_parts):
        return "norms"
    if any(part in name for part in (".attn.", ".self_attn.", ".cross_attn.")):
        return "attention"
    if ".ffn." in name:
        return "ffn"
    raise ValueError(f"parameter {name} belongs to no component")


def count_model_parameters(model: nn.Module) -> dict[str, int]:
    """The same breakdown counted from an instantiated model (shared tensors counted once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, param in model.named_parameters():  # named_parameters skips tied duplicates
        counts[_component(name)] += param.numel()
    counts["total"] = sum(counts.values())
    return counts
