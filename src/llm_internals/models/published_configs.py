"""Published shapes the lessons compare (no weights), and parameter counts for the two
architecture families `models/params.py` does not cover: BERT (encoder-only) and T5
(encoder-decoder).

Decoder shapes beyond `models/presets.py` are ModelConfigs with the values of their public
config.json files (repo named in each docstring). T5 does not fit ModelConfig (relative position
buckets, separate decoder depth), so it has its own small dataclass.

BERT (BertModel, with the pooler), per layer with d = hidden, f = intermediate:
    attention 4 (d^2 + d)  ffn 2 d f + f + d  norms 2 * 2d
    embeddings (vocab + positions + token types) d, plus one LayerNorm 2d; pooler d^2 + d
T5 (T5ForConditionalGeneration, no biases anywhere, RMS-style norms of d weights):
    encoder layer: 4 d (H d_kv) attention + 2 d f ffn + 2 d norms
    decoder layer: 8 d (H d_kv) self + cross attention + 2 d f ffn + 3 d norms
    shared embedding vocab d (tied to the output head), one relative-position bias table
    (buckets x H) per stack, one final norm d per stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_internals.models.config import ModelConfig
from llm_internals.models.params import count_parameters
from llm_internals.models.presets import gpt2_124m, llama3_8b, qwen3_0_6b, smollm_135m

COMPONENTS = ("embeddings", "attention", "ffn", "norms", "lm_head", "other")


def bert_base() -> ModelConfig:
    """google-bert/bert-base-uncased: 12 layers, hidden 768, 12 heads, intermediate 3072."""
    return ModelConfig(
        family="bert", vocab_size=30522, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
        max_seq_len=512, position="learned", norm="layernorm", norm_eps=1e-12,
        norm_position="post", ffn="mlp", activation="gelu", qkv_bias=True, attn_out_bias=True,
        mlp_bias=True, tie_embeddings=True, extra={"type_vocab_size": 2, "mlm_head": False},
    )  # fmt: skip


@dataclass(frozen=True)
class T5Shape:
    """The config.json fields of a T5 checkpoint that decide its size."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    tie_word_embeddings: bool = True


def t5_base() -> T5Shape:
    """google-t5/t5-base (feed_forward_proj "relu", tied embeddings)."""
    return T5Shape(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
        num_heads=12,
    )  # fmt: skip


def llama3_70b() -> ModelConfig:
    """meta-llama/Meta-Llama-3-70B."""
    return ModelConfig(
        family="llama", vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
        d_ff=28672, max_seq_len=8192, norm_eps=1e-5, rope_theta=500000.0,
    )  # fmt: skip


def llama2_7b() -> ModelConfig:
    """meta-llama/Llama-2-7b-hf (multi-head attention: 32 KV heads)."""
    return ModelConfig(
        family="llama", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
        d_ff=11008, max_seq_len=4096, norm_eps=1e-5, rope_theta=10000.0,
    )  # fmt: skip


def mistral_7b() -> ModelConfig:
    """mistralai/Mistral-7B-v0.1."""
    return ModelConfig(
        family="mistral", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        d_ff=14336, max_seq_len=32768, norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096,
    )  # fmt: skip


def qwen2_5_7b() -> ModelConfig:
    """Qwen/Qwen2.5-7B (q/k/v biases)."""
    return ModelConfig(
        family="qwen2", vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
        d_ff=18944, max_seq_len=131072, norm_eps=1e-6, rope_theta=1000000.0, qkv_bias=True,
    )  # fmt: skip


DECODERS = {
    "GPT-2 (124M)": gpt2_124m,
    "SmolLM-135M": smollm_135m,
    "Qwen3-0.6B": qwen3_0_6b,
    "Llama-2-7B": llama2_7b,
    "Mistral-7B": mistral_7b,
    "Qwen2.5-7B": qwen2_5_7b,
    "Llama-3-8B": llama3_8b,
    "Llama-3-70B": llama3_70b,
}


def _with_total(counts: dict[str, int]) -> dict[str, int]:
    counts = {name: counts.get(name, 0) for name in COMPONENTS}
    counts["total"] = sum(counts.values())
    return counts


def count_decoder_parameters(config: ModelConfig) -> dict[str, int]:
    """`models.params.count_parameters` with the "other" column the other families need."""
    counts = count_parameters(config)
    counts.pop("total")
    return _with_total(counts)


def count_bert_parameters(config: ModelConfig, pooler: bool = True) -> dict[str, int]:
    """BertModel's parameters by component ("other" is the pooler's dense layer)."""
    d, f = config.d_model, config.d_ff
    type_vocab = config.extra.get("type_vocab_size", 2)
    embeddings = (config.vocab_size + config.max_seq_len + type_vocab) * d
    per_layer_attention = 4 * (d * d + d)
    per_layer_ffn = 2 * d * f + f + d
    return _with_total(
        {
            "embeddings": embeddings,
            "attention": per_layer_attention * config.n_layers,
            "ffn": per_layer_ffn * config.n_layers,
            "norms": 2 * d + 2 * 2 * d * config.n_layers,  # embedding LayerNorm + 2 per layer
            "other": d * d + d if pooler else 0,
        }
    )


def count_t5_parameters(shape: T5Shape) -> dict[str, int]:
    """T5ForConditionalGeneration's parameters ("other" holds the two relative-bias tables)."""
    d, inner = shape.d_model, shape.num_heads * shape.d_kv
    enc, dec = shape.num_layers, shape.num_decoder_layers
    attention_block = 4 * d * inner  # q, k, v, o without biases
    return _with_total(
        {
            "embeddings": shape.vocab_size * d,
            "attention": attention_block * (enc + 2 * dec),
            "ffn": 2 * d * shape.d_ff * (enc + dec),
            "norms": d * (2 * enc + 3 * dec + 2),
            "lm_head": 0 if shape.tie_word_embeddings else shape.vocab_size * d,
            "other": 2 * shape.relative_attention_num_buckets * shape.num_heads,
        }
    )
