"""DeepSeek-V3 config.json <-> ModelConfig: fields both ways, transformers' defaults, configs
refused at load time (naming the field and value) and at export, parameter counts against
transformers' model and DeepSeek's published figures, and the RoPE layout against DeepSeek's own
complex rotation."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.mla import interleaved_to_halves
from llm_internals.layers.rope import RotaryEmbedding, apply_rope
from llm_internals.models import load_pretrained, published
from llm_internals.models.hf_deepseek_v3 import config_from_hf, config_to_hf
from llm_internals.models.params import count_active_parameters, count_parameters

from .test_hf_deepseek_v3 import SHAPE, VOCAB, make_hf


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The parity tests' tiny model (q_lora_rank 24), saved."""
    hf = make_hf()
    path = tmp_path_factory.mktemp("dsv3_config")
    hf.save_pretrained(path)
    return {24: (hf, path)}


def test_config_fields_map_both_ways(checkpoints):
    _, path = checkpoints[24]
    hf = json.loads((path / "config.json").read_text())
    config = config_from_hf(hf, "config.json")
    assert (config.family, config.d_model, config.n_layers, config.n_heads, config.d_ff) == (
        "deepseek_v3", 40, 3, 5, 56)  # fmt: skip
    assert (config.norm_eps, config.rope_theta, config.vocab_size) == (0.05, 321.0, VOCAB)
    assert config.moe == {"d_expert": 12, "n_experts": 8, "top_k": 2, "router": "sigmoid_grouped",
                          "norm_topk_prob": True, "n_group": 4, "topk_group": 2,
                          "routed_scaling_factor": 1.7, "n_shared_experts": 1,
                          "activation": "silu", "dense_layers": [0]}  # fmt: skip
    assert config.mla == {"kv_lora_rank": 16, "q_lora_rank": 24, "qk_nope_head_dim": 8,
                          "qk_rope_head_dim": 4, "v_head_dim": 6,
                          "rope_interleave": True}  # fmt: skip
    back = transformers.DeepseekV3Config(**config_to_hf(config))
    reference = transformers.DeepseekV3Config(**SHAPE)
    shape = [field for field in SHAPE if not field.endswith("token_id")]  # not ModelConfig's
    for field in (*shape, "norm_topk_prob", "rope_interleave", "tie_word_embeddings"):
        assert getattr(back, field) == getattr(reference, field), field
    assert back.num_mtp_layers == 0  # no multi-token-prediction weights are written


def test_absent_fields_take_transformers_defaults():
    """A config.json that leaves every field out means DeepseekV3Config()'s values."""
    defaults = transformers.DeepseekV3Config().to_dict()
    assert config_from_hf({"model_type": "deepseek_v3"}, "c") == config_from_hf(defaults, "c")


@pytest.mark.parametrize(
    ("moe_change", "message"),
    [
        ({"router": "softmax_topk"}, "its router is sigmoid_grouped"),
        ({"dense_layers": [1]}, "dense layers must be the first ones"),
        ({"n_shared_experts": 0}, "at least one shared expert"),
        ({"activation": "gelu"}, "share one activation"),
    ],
)
def test_export_refuses_what_deepseek_v3_cannot_hold(checkpoints, moe_change, message):
    _, path = checkpoints[24]
    config = config_from_hf(json.loads((path / "config.json").read_text()), "config.json")
    with pytest.raises(LLMInternalsError, match=message):
        config_to_hf(config.replace(moe=config.moe | moe_change))


def official_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """DeepSeek's inference/model.py: interleaved pairs (x0, x1), ... as complex numbers times
    e^{i p w_k}, w_k = theta^(-2k/d) (transcribed from the spec, shared/specs/mla.md)."""
    d = x.shape[-1]
    w = (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)).double()  # fp32, as there
    rotation = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64),
                           positions[:, None].double() * w)  # fmt: skip
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2)


def test_rope_layout_equals_deepseeks_complex_rotation():
    """Our (transformers') layout: reorder to (evens, odds), rotate halves. It equals DeepSeek's
    complex rotation of interleaved pairs up to that same reordering, so q . k is unchanged."""
    torch.manual_seed(7)
    positions = torch.arange(11)
    q, k = torch.randn(2, 11, 8, dtype=torch.float64).unbind(0)
    cos, sin = RotaryEmbedding(8, 321.0)(positions, dtype=torch.float64)
    ours_q = apply_rope(interleaved_to_halves(q), cos, sin)
    ours_k = apply_rope(interleaved_to_halves(k), cos, sin)
    official_q, official_k = official_rope(q, positions, 321.0), official_rope(k, positions, 321.0)
    torch.testing.assert_close(ours_q, interleaved_to_halves(official_q), atol=1e-12, rtol=0)
    assert (ours_q - official_q).abs().max() > 0.1  # the layouts themselves differ
    torch.testing.assert_close(ours_q @ ours_k.T, official_q @ official_k.T, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_experts_per_tok": 9}, "num_experts_per_tok = 9 must be between 1 and "
                                     "n_routed_experts = 8"),
        ({"n_group": 3}, "n_group = 3 does not divide the 8 experts"),
        ({"topk_group": 1, "num_experts_per_tok": 3}, "num_experts_per_tok = 3 exceeds"),
        ({"kv_lora_rank": 64}, "kv_lora_rank = 64 is larger than hidden_size = 40"),
        ({"q_lora_rank": 48}, "q_lora_rank = 48 is larger than hidden_size = 40"),
        ({"scoring_func": "softmax"}, "scoring_func = 'softmax' is not supported"),
        ({"topk_method": "greedy"}, "topk_method = 'greedy' is not supported"),
        ({"attention_bias": True}, "attention_bias = True is not supported"),
        ({"num_key_value_heads": 1}, "num_key_value_heads = 1 must equal num_attention_heads"),
        ({"qk_rope_head_dim": 5}, "qk_rope_head_dim = 5 is odd"),
        ({"n_shared_experts": 0}, "n_shared_experts = 0 is not supported"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         "rope_parameters rope_type = 'dynamic' is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
         "original_max_position_embeddings"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_at_load_time(checkpoints, tmp_path, change, message):
    _, path = checkpoints[24]
    config = json.loads((path / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(LLMInternalsError, match="config.json") as err:
        load_pretrained(tmp_path)
    assert message in err.value.message


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_parameter_counts_equal_transformers_model(q_lora_rank):
    """count_parameters == the parameters of transformers' model; count_active_parameters == that
    less the routed experts a token's top-k leaves idle, from HF's expert tensors."""
    with torch.device("meta"):
        hf = transformers.DeepseekV3ForCausalLM(
            transformers.DeepseekV3Config(**SHAPE | {"q_lora_rank": q_lora_rank})
        )
    config = config_from_hf(hf.config.to_dict(), "config.json")
    assert count_parameters(config)["total"] == sum(p.numel() for p in hf.parameters())
    idle = sum(
        (8 - 2)
        * (layer.mlp.experts.gate_up_proj[0].numel() + layer.mlp.experts.down_proj[0].numel())
        for layer in hf.model.layers[1:]
    )
    assert count_active_parameters(config) == count_parameters(config)["total"] - idle


def test_published_deepseek_v3_has_its_published_size():
    """DeepSeek-V3's config.json in the one table of published shapes goes through the import
    path (YaRN included) and counts DeepSeek's published figures: 671B parameters in the main
    model (the 14B multi-token-prediction module is extra) and 37B activated per token."""
    config = published.model_config("deepseek-v3")
    assert config.family == "deepseek_v3" and config.rope_scaling["factor"] == 40
    assert config.moe["dense_layers"] == [0, 1, 2] and config.mla["kv_lora_rank"] == 512
    assert int(published.parameter_counts("deepseek-v3")["total"] / 1e9) == 671
    assert int(published.active_parameters("deepseek-v3") / 1e9) == 37
