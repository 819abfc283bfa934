"""MoE families (Mixtral, Qwen2-MoE, Qwen3-MoE) against transformers: logits of tiny random
checkpoints with odd shapes (d_model 24, 3 query heads on 1 KV head, 6 experts top-2, vocab
101), left-padded batches, the layers kept dense, export (ours -> HF loads it), the fused expert
layout of transformers 5 state dicts, and config errors at load time."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.moe import MoELayer
from llm_internals.models import DecoderLM, ModelConfig, load_pretrained, save_pretrained

TOL = 1e-4
VOCAB = 101
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
HF_CLASSES = {
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM),
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM),
}
# Every family's own fields away from their defaults where that is possible: Qwen2-MoE keeps
# layer 1 dense and does not renormalise the top-k; Qwen3-MoE renormalises, has attention biases
# and a head_dim that is not hidden_size / heads.
FAMILY_FIELDS = {
    "mixtral": dict(intermediate_size=20, num_local_experts=6),
    "qwen2_moe": dict(intermediate_size=20, moe_intermediate_size=10, num_experts=6,
                      shared_expert_intermediate_size=14, mlp_only_layers=[1],
                      norm_topk_prob=False),
    "qwen3_moe": dict(intermediate_size=20, moe_intermediate_size=10, num_experts=6,
                      mlp_only_layers=[2], norm_topk_prob=True, attention_bias=True,
                      head_dim=10),
}  # fmt: skip


def make_hf_moe(family: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A 3-layer random HF MoE model, weights perturbed away from the init. The init is wide
    (std 0.25, not 0.02) so that the experts move the logits by about their own size: with HF's
    default, zeroing every expert left the greedy tokens of these tiny models unchanged. HF's
    eager expert loop is asked for: its grouped-matmul path needs 16-byte strides, which odd
    widths lack."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=3, num_attention_heads=3,
                  num_key_value_heads=1, num_experts_per_tok=2, max_position_embeddings=64,
                  rms_norm_eps=0.05, rope_theta=321.0, bos_token_id=0, eos_token_id=3,
                  initializer_range=0.25, experts_implementation="eager")  # fmt: skip
    config_class, model_class = HF_CLASSES[family]
    model = model_class(config_class(**kwargs | FAMILY_FIELDS[family] | overrides))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def hf_load(path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, experts_implementation="eager"
    ).eval()


@pytest.fixture(scope="module")
def moe_checkpoints(tmp_path_factory):
    out = {}
    for family in MOE_FAMILIES:
        model = make_hf_moe(family)
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (model, path)
    return out


def random_ids(batch=3, seq=11, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("attn_impl", "fused_ops"), [("scratch", False), ("sdpa", True)])
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_logits_and_left_padded_batch_match_hf(moe_checkpoints, family, attn_impl, fused_ops):
    hf, path = moe_checkpoints[family]
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    assert isinstance(ours, DecoderLM) and ours.config.family == family
    ids = random_ids()
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :7] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
    assert (got - expected)[mask.bool()].abs().max().item() < TOL


def test_the_sparse_and_dense_layers_are_hfs(moe_checkpoints):
    """Which blocks hold experts follows HF's own choice (mlp_only_layers, decoder_sparse_step)."""
    cases = [(f, moe_checkpoints[f][0]) for f in MOE_FAMILIES]
    stepped = make_hf_moe("qwen2_moe", num_hidden_layers=5, decoder_sparse_step=2,
                          mlp_only_layers=[3])  # fmt: skip
    cases.append(("qwen2_moe", stepped))
    for family, hf in cases:
        sparse = [hasattr(layer.mlp, "experts") for layer in hf.model.layers]
        assert any(sparse) and (family == "mixtral" or not all(sparse))
        config = ModelConfig(**_config_of(hf))
        ours = [isinstance(block.ffn, MoELayer) for block in DecoderLM(config).blocks]
        assert ours == sparse, family


def _config_of(hf) -> dict:
    from llm_internals.models.hf_decoder import config_from_hf

    return config_from_hf(hf.config.to_dict(), "test").to_dict()


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_export_loads_in_transformers_and_round_trips(moe_checkpoints, family, tmp_path):
    hf, path = moe_checkpoints[family]
    ours = load_pretrained(path)
    save_pretrained(ours, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == family
    reloaded = hf_load(tmp_path)
    assert type(reloaded) is type(hf)
    ids = random_ids(seed=2)
    with torch.no_grad():
        assert (reloaded(ids).logits - hf(ids).logits).abs().max().item() < TOL
        assert torch.equal(load_pretrained(tmp_path)(ids), ours(ids))


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_fused_experts_of_a_transformers_state_dict_load(moe_checkpoints, family, tmp_path):
    """A file written straight from a transformers 5 state dict: experts.gate_up_proj [E, 2I, d],
    experts.down_proj [E, d, I], Mixtral's block named mlp."""
    hf, path = moe_checkpoints[family]
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    save_file(state, tmp_path / "model.safetensors", {"format": "pt"})
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    ids = random_ids(seed=3)
    with torch.no_grad():
        assert (load_pretrained(tmp_path)(ids) - hf(ids).logits).abs().max().item() < TOL


def test_mixtral_sliding_window_matches_hf(tmp_path):
    hf = make_hf_moe("mixtral", seed=1, sliding_window=5)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert ours.config.sliding_window == 5
    ids = random_ids(batch=2, seq=14, seed=4)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("qwen2_moe", {"qkv_bias": False, "norm_topk_prob": True}),
        ("qwen3_moe", {"tie_word_embeddings": True, "num_experts_per_tok": 1}),
        ("mixtral", {"hidden_act": "gelu_pytorch_tanh", "num_experts_per_tok": 6}),
    ],
)
def test_config_variants_match_hf_both_ways(family, overrides, tmp_path):
    hf = make_hf_moe(family, seed=3, **overrides)
    hf.save_pretrained(tmp_path / "in")
    ours = load_pretrained(tmp_path / "in")
    save_pretrained(ours, tmp_path / "out")
    ids = random_ids(batch=2, seed=7)
    with torch.no_grad():
        expected = hf(ids).logits
        assert (ours(ids) - expected).abs().max().item() < TOL
        assert (hf_load(tmp_path / "out")(ids).logits - expected).abs().max().item() < TOL


BAD_FIELDS = [
    ("mixtral", {"num_experts_per_tok": 7}, "num_experts_per_tok = 7 is larger than "
     "num_local_experts = 6"),
    ("qwen3_moe", {"num_experts_per_tok": 9}, "num_experts_per_tok = 9 is larger than "
     "num_local_experts = 6"),  # transformers writes Qwen3-MoE's count under that name
    ("qwen2_moe", {"num_experts_per_tok": 7}, "num_experts = 6"),
    ("qwen2_moe", {"num_experts": 0}, "'num_experts' must be an integer >= 1, got 0"),
    ("qwen2_moe", {"decoder_sparse_step": 0}, "'decoder_sparse_step' must be an integer >= 1"),
    ("qwen3_moe", {"mlp_only_layers": [3]}, "'mlp_only_layers' must list layer indices below "
     "num_hidden_layers=3, got [3]"),
    ("mixtral", {"router_jitter_noise": -0.1}, "'router_jitter_noise' must be a number >= 0"),
    ("qwen2_moe", {"shared_expert_intermediate_size": None},
     "missing field 'shared_expert_intermediate_size'"),
    ("qwen3_moe", {"norm_topk_prob": "yes"}, "'norm_topk_prob' must be true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "change", "message"), BAD_FIELDS)
def test_bad_moe_fields_fail_at_load_naming_field_and_value(
    moe_checkpoints, family, change, message, tmp_path
):
    _, path = moe_checkpoints[family]
    config = json.loads((path / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(LLMInternalsError) as err:
        load_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in err.value.message
    assert message in err.value.message


def test_router_jitter_is_training_only_and_accepted(moe_checkpoints, tmp_path):
    """HF applies router_jitter_noise only in training mode: eval logits are unchanged."""
    hf = make_hf_moe("mixtral", router_jitter_noise=0.3)
    hf.save_pretrained(tmp_path)
    ids = random_ids(seed=5)
    with torch.no_grad():
        assert (load_pretrained(tmp_path)(ids) - hf(ids).logits).abs().max().item() < TOL


def _custom_moe(qkv_bias: bool = False, **moe) -> DecoderLM:
    fields = dict(d_expert=8, n_experts=4, top_k=2) | moe
    config = ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, moe=fields,
                         qkv_bias=qkv_bias)  # fmt: skip
    return DecoderLM(config).eval()


@pytest.mark.parametrize(
    ("moe", "message"),
    [
        ({"capacity_factor": 1.25}, "mixtral drops no tokens (capacity_factor must be null)"),
        ({"router": "sigmoid_grouped"}, "qwen3_moe routes with softmax_topk, not sigmoid_grouped"),
        ({"router": "softmax_topk", "n_shared_experts": 1}, "qwen3_moe has no shared experts"),
        ({"dense_layers": [0]}, "every Mixtral layer is sparse"),
    ],
)
def test_export_refuses_what_the_hf_family_cannot_hold(moe, message, tmp_path):
    with pytest.raises(LLMInternalsError, match="cannot export") as err:
        save_pretrained(_custom_moe(**moe), tmp_path)
    assert message in err.value.message


def test_custom_moe_model_exports_as_its_closest_family(tmp_path):
    """A model trained here (family "custom") with Qwen2-MoE's routing is written as Qwen2-MoE."""
    ours = _custom_moe(qkv_bias=True, router="softmax_topk", norm_topk_prob=False, d_shared=12,
                       shared_expert_gate=True)  # fmt: skip
    save_pretrained(ours, tmp_path)
    reloaded = hf_load(tmp_path)
    assert isinstance(reloaded, transformers.Qwen2MoeForCausalLM)
    ids = random_ids(seed=6)
    with torch.no_grad():
        assert (reloaded(ids).logits - ours(ids)).abs().max().item() < TOL
