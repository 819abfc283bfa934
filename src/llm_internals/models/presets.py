"""Shapes of well-known decoder checkpoints, as ModelConfigs (no weights: for parameter counts,
KV-cache sizes and benchmarks). Values are those of the public config.json files."""

from __future__ import annotations

from llm_internals.models.config import ModelConfig


def gpt2_124m() -> ModelConfig:
    """openai-community/gpt2."""
    return ModelConfig(
        family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, max_seq_len=1024,
        position="learned", norm="layernorm", norm_eps=1e-5, ffn="mlp", activation="gelu_tanh",
        qkv_bias=True, attn_out_bias=True, mlp_bias=True, tie_embeddings=True,
    )  # fmt: skip


def smollm_135m() -> ModelConfig:
    """HuggingFaceTB/SmolLM-135M (Llama architecture)."""
    return ModelConfig(
        family="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
        d_ff=1536, max_seq_len=2048, norm_eps=1e-5, rope_theta=10000.0, tie_embeddings=True,
    )  # fmt: skip


def llama3_8b() -> ModelConfig:
    """meta-llama/Meta-Llama-3-8B."""
    return ModelConfig(
        family="llama", vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        d_ff=14336, max_seq_len=8192, norm_eps=1e-5, rope_theta=500000.0,
    )  # fmt: skip


def qwen3_0_6b() -> ModelConfig:
    """Qwen/Qwen3-0.6B."""
    return ModelConfig(
        family="qwen3", vocab_size=151936, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8,
        head_dim=128, d_ff=3072, max_seq_len=40960, norm_eps=1e-6, rope_theta=1000000.0,
        qk_norm=True, tie_embeddings=True,
    )  # fmt: skip


PRESETS = {
    "gpt2-124m": gpt2_124m,
    "smollm-135m": smollm_135m,
    "llama-3-8b": llama3_8b,
    "qwen3-0.6b": qwen3_0_6b,
}
