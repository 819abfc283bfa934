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
