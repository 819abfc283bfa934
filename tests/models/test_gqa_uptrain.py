"""Mean-pooling K/V heads (GQA uptraining init): checked against HF's Llama with fewer KV heads."""

import tempfile

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM, ModelConfig, save_pretrained
from llm_internals.models.gqa_uptrain import mean_pool_heads, uptrain_init


def _model(n_kv_heads=4):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads,
                         max_seq_len=16, qkv_bias=True, tie_embeddings=True)  # fmt: skip
    return DecoderLM(config).eval()


def test_mean_pool_heads_by_hand():
    weight = torch.arange(8.0).view(4, 2)  # 4 heads of head_dim 1, 2 input features
    pooled = mean_pool_heads(weight, n_heads=4, n_groups=2)
    assert torch.equal(pooled, torch.tensor([[1.0, 2.0], [5.0, 6.0]]))


def test_pooled_model_loads_in_hf_with_same_logits():
    model = _model()
    pooled = uptrain_init(model, 2)
    assert pooled.config.n_kv_heads == 2 and pooled.lm_head.is_tied_to(pooled.tok_emb)
    assert torch.equal(pooled.blocks[0].attn.q_proj.weight, model.blocks[0].attn.q_proj.weight)
    k_bias = model.blocks[1].attn.k_proj.bias.view(2, 2, 8).mean(1).flatten()
    assert torch.allclose(pooled.blocks[1].attn.k_proj.bias, k_bias)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as directory:
        save_pretrained(pooled, directory)
        hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
        assert hf.config.num_key_value_heads == 2
        with torch.no_grad():
            assert (hf(ids).logits - pooled(ids)).abs().max().item() < 1e-4


def test_same_head_count_is_an_exact_copy():
    model = _model()
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(uptrain_init(model, 4)(ids), model(ids))


@pytest.mark.parametrize("bad", [3, 8, 0, True, 1.5])
def test_bad_head_counts_are_named(bad):
    with pytest.raises(LLMInternalsError, match="n_kv_heads|K/V heads"):
        uptrain_init(_model(), bad)
