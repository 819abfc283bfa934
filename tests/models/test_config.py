"""ModelConfig validation and JSON round trip."""

from __future__ import annotations

import json

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.models import ModelConfig

BASE = dict(vocab_size=100, d_model=64, n_layers=2, n_heads=4)


def test_defaults_are_derived():
    config = ModelConfig(**BASE)
    assert (config.n_kv_heads, config.head_dim, config.d_ff) == (4, 16, 256)
    assert ModelConfig(**BASE, n_kv_heads=2).n_rep == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_kv_heads": 3}, "n_heads=4 is not a multiple of n_kv_heads=3"),
        ({"n_kv_heads": 8}, "n_heads=4 is not a multiple of n_kv_heads=8"),
        ({"d_model": 66}, "d_model=66 is not divisible by n_heads=4"),
        ({"activation": "swish2"}, "unknown activation 'swish2'"),
        ({"norm": "batchnorm"}, "unknown norm 'batchnorm'"),
        ({"position": "alibi"}, "unknown position 'alibi'"),
        ({"attn_impl": "fused"}, "unknown attn_impl 'fused'"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer, got 0"),
        ({"n_layers": 2.5}, "n_layers must be a positive integer, got 2.5"),
        ({"head_dim": 15}, "RoPE needs an even head_dim, got 15"),
        ({"norm_eps": 0}, "norm_eps must be > 0"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"sliding_window": 0}, "sliding_window must be a positive int"),
        ({"rope_scaling": {"rope_type": "dynamic"}}, "type 'dynamic' is not supported"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn rope_scaling lacks"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "llama3 rope_scaling lacks"),
    ],
)
def test_invalid_values_are_named(changes, message):
    with pytest.raises(LLMInternalsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**(BASE | changes))


def test_explicit_head_dim_lifts_divisibility_requirement():
    config = ModelConfig(**(BASE | {"d_model": 66, "head_dim": 16}))
    assert config.head_dim * config.n_heads == 64


def test_json_round_trip(tmp_path):
    config = ModelConfig(
        **BASE,
        n_kv_heads=2,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    )
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temp files left


def test_bad_json_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE | {"n_head": 4}))
    with pytest.raises(LLMInternalsError, match="unknown field.*n_head"):
        ModelConfig.load(path)
    path.write_text(json.dumps({"vocab_size": 10}))
    with pytest.raises(LLMInternalsError, match="missing field.*d_model"):
        ModelConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(LLMInternalsError, match="malformed JSON"):
        ModelConfig.load(path)
    with pytest.raises(LLMInternalsError, match="does not exist"):
        ModelConfig.load(tmp_path / "nope.json")
