"""Parameter counts by component, from a config alone (no weights needed, so Llama-3-8B is free).

Per layer, with d = d_model, h = head_dim, H = n_heads, G = n_kv_heads, f = d_ff:
    attention  d*H*h (W_q) + 2*d*G*h (W_k, W_v) + H*h*d (W_o)     (+ biases)
    ffn        2*d*f (MLP) or 3*d*f (gated: gate, up, down)        (+ biases)
    norms      d per RMSNorm, 2d per LayerNorm (weight and bias), 2h for Qwen3's QK-norm
embeddings = vocab*d (+ max_seq_len*d for learned positions); the output head adds vocab*d
unless tied to the embedding.

Multi-head latent attention (config.mla; H heads, ranks r_q and r_kv, per-head widths n (nope),
r (rope) and v), its two latent RMSNorms counted with the attention as our modules hold them:
    d r_q + r_q + r_q H (n + r)   (W_DQ, its norm, W_UQ; d H (n + r) for W_Q without r_q)
    + d (r_kv + r) + r_kv + r_kv H (n + v) + H v d   (W_DKV and the rope key, its norm, W_UKV, W_O)

Mixture-of-experts layers (config.moe; the blocks of moe.dense_layers keep the FFN above), with
E routed experts of width f_e, top-k routing and shared width f_s (the ffn component):
    routed experts  E * 3 d f_e      router  E d      shared  3 d f_s (+ d for its sigmoid gate)
Active parameters (`count_active_parameters`) are those one token is multiplied by or looks up:
everything but the E - k routed experts it does not use, i.e. total - (E - k) 3 d f_e per MoE
layer (embeddings, router and shared experts included, as published "A2.7B"-style figures do).

Two families outside the decoder formula, with an "other" column for what fits no component:
BERT (BertModel, with the pooler), per layer with d = hidden, f = intermediate:
    attention 4 (d^2 + d)  ffn 2 d f + f + d  norms 2 * 2d
    embeddings (vocab + positions + token types) d, plus one LayerNorm 2d; pooler d^2 + d (other)
T5 (T5ForConditionalGeneration, read from its HF config fields: it does not fit ModelConfig; no
biases anywhere, RMS-style norms of d weights, with i = num_heads * d_kv):
    encoder layer: 4 d i attention + 2 d f ffn (3 d f when gated) + 2 d norms
    decoder layer: 8 d i self + cross attention + the same ffn + 3 d norms
    shared embedding vocab d, tied to the output head (transformers 5 ties it for every T5,
    whatever tie_word_embeddings says), one relative-position bias table (buckets x heads) per
    stack (other), one final norm d per stack.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from llm_internals.models.config import ModelConfig, mla_layer_config, moe_layer_config

COMPONENTS = ("embeddings", "attention", "ffn", "norms", "lm_head")
ALL_COMPONENTS = (*COMPONENTS, "other")


def count_parameters(config: ModelConfig) -> dict[str, int]:
    """{component: count} for COMPONENTS, plus "total"."""
    d, h, f = config.d_model, config.head_dim, config.d_ff
    q_width, kv_width = config.n_heads * h, config.n_kv_heads * h
    embeddings = config.vocab_size * d
    if config.position == "learned":
        embeddings += config.max_seq_len * d
    attention = d * q_width + 2 * d * kv_width + q_width * d
    mla = mla_layer_config(config)
    if mla is not None:
        attention = _mla_attention(mla)
    if config.qkv_bias:
        attention += q_width + 2 * kv_width
    if config.attn_out_bias:
        attention += d
    n_mats = 3 if config.ffn == "gated" else 2
    dense_ffn = n_mats * d * f
    if config.mlp_bias:
        dense_ffn += (n_mats - 1) * f + d
    ffn = sum(_moe_ffn(config, i)[0] or dense_ffn for i in range(config.n_layers))
    norm_size = 2 * d if config.norm == "layernorm" else d
    layer_norms = 2 * norm_size + (2 * h if config.qk_norm else 0)
    final_norm = norm_size if config.norm_position == "pre" else 0
    counts = {
        "embeddings": embeddings,
        "attention": attention * config.n_layers,
        "ffn": ffn,
        "norms": layer_norms * config.n_layers + final_norm,
        "lm_head": 0 if config.tie_embeddings else config.vocab_size * d,
    }
    counts["total"] = sum(counts.values())
    return counts


def _mla_attention(c) -> int:
    """One Multi-head Latent Attention layer's weights (layers/mla.py), latent norms included."""
    heads, qk = c.num_attention_heads, c.qk_nope_head_dim + c.qk_rope_head_dim
    if c.q_lora_rank is None:
        query = c.hidden_size * heads * qk
    else:
        query = c.hidden_size * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * qk
    kv = c.hidden_size * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
    kv += c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim)
    return query + kv + heads * c.v_head_dim * c.hidden_size


def _moe_ffn(config: ModelConfig, layer_idx: int) -> tuple[int, int]:
    """(all parameters, unused-per-token routed-expert parameters) of block `layer_idx`'s MoE
    layer; (0, 0) where the block keeps its dense FFN."""
    moe = moe_layer_config(config, layer_idx)
    if moe is None:
        return 0, 0
    d = config.d_model
    expert = 3 * d * moe.d_expert  # gate, up, down of one SwiGLU expert, no biases
    shared = 3 * d * (moe.d_shared or moe.n_shared_experts * moe.d_expert)
    gate = d if moe.shared_expert_gate else 0
    return moe.n_experts * (expert + d) + shared + gate, (moe.n_experts - moe.top_k) * expert


def count_active_parameters(config: ModelConfig) -> int:
    """Parameters one token uses: the total less the routed experts its top-k leaves idle
    (equal to the total for a dense model)."""
    idle = sum(_moe_ffn(config, i)[1] for i in range(config.n_layers))
    return count_parameters(config)["total"] - idle


def with_all_components(counts: dict[str, int]) -> dict[str, int]:
    """`counts` over ALL_COMPONENTS (missing ones 0), with "total" recomputed."""
    counts = {name: counts.get(name, 0) for name in ALL_COMPONENTS}
    counts["total"] = sum(counts.values())
    return counts


def count_bert_parameters(config: ModelConfig, pooler: bool = True) -> dict[str, int]:
    """BertModel's parameters by component ("other" is the pooler's dense layer)."""
    d, f = config.d_model, config.d_ff
    type_vocab = config.extra.get("type_vocab_size", 2)
    return with_all_components(
        {
            "embeddings": (config.vocab_size + config.max_seq_len + type_vocab) * d,
            "attention": 4 * (d * d + d) * config.n_layers,
            "ffn": (2 * d * f + f + d) * config.n_layers,
            "norms": 2 * d + 2 * 2 * d * config.n_layers,  # embedding LayerNorm + 2 per layer
            "other": d * d + d if pooler else 0,
        }
    )


def count_t5_parameters(hf: dict[str, Any]) -> dict[str, int]:
    """T5ForConditionalGeneration's parameters from its HF config.json fields ("other" holds
    the two relative-position bias tables). Defaults are T5Config's."""
    d, inner = hf["d_model"], hf["num_heads"] * hf.get("d_kv", 64)
    enc = hf["num_layers"]
    dec = hf.get("num_decoder_layers") or enc
    ffn_mats = 3 if hf.get("feed_forward_proj", "relu").startswith("gated-") else 2
    return with_all_components(
        {
            "embeddings": hf["vocab_size"] * d,
            "attention": 4 * d * inner * (enc + 2 * dec),  # q, k, v, o; decoder: self + cross
            "ffn": ffn_mats * d * hf["d_ff"] * (enc + dec),
            "norms": d * (2 * enc + 3 * dec + 2),
            "other": 2 * hf.get("relative_attention_num_buckets", 32) * hf["num_heads"],
        }
    )


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
