"""Parameter counting by component, checked against instantiated models (ours and HF's).
Real published shapes are checked against HF in tests/models/test_published.py."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.models import DecoderLM, count_model_parameters, count_parameters
from llm_internals.models.encoder import EncoderLM
from llm_internals.models.hf_bert import config_from_hf as bert_config_from_hf
from llm_internals.models.params import count_bert_parameters
from llm_internals.models.published import hf_config, model_config


def test_components_add_up_and_gpt2_breakdown():
    counts = count_parameters(model_config("gpt2-124m"))
    assert counts["embeddings"] == 50257 * 768 + 1024 * 768
    assert counts["lm_head"] == 0  # tied
    assert counts["attention"] == 12 * (4 * 768 * 768 + 4 * 768)
    assert counts["ffn"] == 12 * (2 * 768 * 3072 + 3072 + 768)
    assert counts["norms"] == 12 * 2 * 2 * 768 + 2 * 768
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"tie_embeddings": True},
        {"qkv_bias": True, "attn_out_bias": True, "mlp_bias": True},
        {"ffn": "mlp", "norm": "layernorm", "position": "learned"},
        {"qk_norm": True, "n_kv_heads": 1},
    ],
)
def test_counts_match_instantiated_models(changes):
    config = model_config("smollm-135m").replace(n_layers=2, vocab_size=100, **changes)
    assert count_model_parameters(DecoderLM(config)) == count_parameters(config)


def test_bert_count_matches_our_encoder_and_hf_bert_without_pooler():
    fields = {**hf_config("bert-base"), "architectures": ["BertModel"], "num_hidden_layers": 2,
              "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
              "vocab_size": 100}  # fmt: skip
    config = bert_config_from_hf(fields, "tiny bert")  # BertModel: no masked-LM head
    counts = count_bert_parameters(config, pooler=False)
    assert counts["other"] == 0
    ours = count_model_parameters(EncoderLM(config))
    assert {k: v for k, v in counts.items() if k != "other"} == ours
    with torch.device("meta"):
        hf = transformers.AutoModel.from_config(
            transformers.AutoConfig.for_model(**fields), add_pooling_layer=False
        )
    assert counts["total"] == sum(p.numel() for p in hf.parameters())


# Mixture of experts: totals against HF's own MoE models, active counts by hand and by gradient.
MOE_HF_FIELDS = {
    "mixtral": dict(num_local_experts=5),
    "qwen2_moe": dict(num_experts=5, moe_intermediate_size=6, shared_expert_intermediate_size=10,
                      decoder_sparse_step=2, mlp_only_layers=[2]),
    "qwen3_moe": dict(num_experts=5, moe_intermediate_size=6, mlp_only_layers=[0],
                      head_dim=6, attention_bias=True),
}  # fmt: skip


@pytest.mark.parametrize("family", MOE_HF_FIELDS)
def test_moe_totals_equal_hf_models_with_dense_and_sparse_layers(family):
    from llm_internals.models.hf_decoder import config_from_hf

    fields = dict(model_type=family, vocab_size=50, hidden_size=16, intermediate_size=12,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  num_experts_per_tok=2, max_position_embeddings=32)  # fmt: skip
    fields |= MOE_HF_FIELDS[family]
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model(**fields)
        )
    config = config_from_hf(fields, family)
    counts = count_parameters(config)
    assert counts["total"] == sum(p.numel() for p in hf.parameters())
    assert count_model_parameters(DecoderLM(config)) == counts


def tiny_moe_config():
    """d 8, heads 2 (1 KV head of 4), layer 0 dense (d_ff 12), layer 1 MoE: 4 experts of width 5,
    top-2, a gated shared expert of width 6."""
    from llm_internals.models import ModelConfig

    moe = dict(d_expert=5, n_experts=4, top_k=2, router="softmax_topk", d_shared=6,
               shared_expert_gate=True, dense_layers=[0])  # fmt: skip
    return ModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1,
                       d_ff=12, moe=moe)  # fmt: skip


def test_moe_active_parameters_by_hand():
    from llm_internals.models.params import count_active_parameters

    embeddings = lm_head = 10 * 8
    attention = 2 * (8 * 8 + 2 * 8 * 4 + 8 * 8)  # W_q, W_k, W_v, W_o per layer
    norms = 2 * 2 * 8 + 8  # two per layer, one final
    dense_ffn = 3 * 8 * 12
    expert = 3 * 8 * 5
    moe = 4 * expert + 4 * 8 + 3 * 8 * 6 + 8  # experts, router, shared, shared gate
    total = embeddings + lm_head + attention + norms + dense_ffn + moe
    config = tiny_moe_config()
    assert count_parameters(config)["total"] == total
    assert count_active_parameters(config) == total - (4 - 2) * expert


def test_moe_active_parameters_are_the_ffn_weights_one_token_gets_gradients_for():
    """One token, one backward pass: of the FFN tensors (dense, routed, router, shared), exactly
    the active ones get a non-zero gradient. (Attention is left out: with one token its softmax
    is constant, so W_q and W_k get none although the token uses them.)"""
    from llm_internals.models.params import count_active_parameters

    torch.manual_seed(0)
    config = tiny_moe_config()
    model = DecoderLM(config).double()
    model(torch.tensor([[3]])).sum().backward()
    touched = sum(p.numel() for name, p in model.named_parameters()
                  if ".ffn." in name and p.grad is not None and p.grad.any())  # fmt: skip
    counts = count_parameters(config)
    idle = counts["total"] - count_active_parameters(config)
    assert idle > 0 and touched == counts["ffn"] - idle
