"""DeepseekV3ForCausalLM import/export against transformers: fp32 logit parity (plain and padded
batches, written-out and sdpa attention, both RoPE layouts, YaRN), export read back by
transformers, the fused in-memory expert layout and extra multi-token-prediction tensors on
import, greedy generate == HF generate, the paged engine == generate. Config fields, refused
configs and parameter counts: test_hf_deepseek_v3_config.py."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged.engine import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.layers.mla import MultiHeadLatentAttention
from llm_internals.layers.moe import MoELayer
from llm_internals.models import DecoderLM, ModelConfig, load_pretrained, save_pretrained

from .conftest import hf_greedy

TOL = 1e-4
VOCAB = 97
EOS = 3
PROMPTS = [[5, 17, 90, 42, 8, 77, 61], [12, 4], [60, 33, 2, 90]]
# Odd, distinct widths (a swapped split cannot pass by accident); 8 experts in 4 groups of 2,
# the 2 best groups kept, 2 experts per token; one dense layer first; eps and theta away from
# their defaults so a loader that ignored them would fail.
SHAPE = dict(vocab_size=VOCAB, hidden_size=40, intermediate_size=56, moe_intermediate_size=12,
             num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=5,
             n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2,
             n_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=1.7,
             kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=4,
             v_head_dim=6, max_position_embeddings=64, rms_norm_eps=0.05,
             rope_parameters={"rope_type": "default", "rope_theta": 321.0},
             bos_token_id=0, eos_token_id=EOS)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_hf(seed: int = 0, **overrides) -> transformers.DeepseekV3ForCausalLM:
    """A random tiny HF model, weights moved off their init and a non-zero selection bias."""
    torch.manual_seed(seed)
    model = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**SHAPE | overrides))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.15)
        for layer in model.model.layers[SHAPE["first_k_dense_replace"] :]:
            layer.mlp.gate.e_score_correction_bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """q_lora_rank 24 (query compression) and None (q_proj) -> (HF model, saved directory)."""
    out = {}
    for q_lora_rank in (24, None):
        hf = make_hf(q_lora_rank=q_lora_rank)
        path = tmp_path_factory.mktemp(f"dsv3_q{q_lora_rank}")
        hf.save_pretrained(path)
        out[q_lora_rank] = (hf, path)
    return out


def random_ids(batch=3, seq=12, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_logits_match_hf(checkpoints, q_lora_rank, impl):
    hf, path = checkpoints[q_lora_rank]
    ours = load_pretrained(path, attn_impl=impl)
    assert isinstance(ours.blocks[0].attn, MultiHeadLatentAttention)
    assert not isinstance(ours.blocks[0].ffn, MoELayer)  # first_k_dense_replace = 1
    assert all(isinstance(block.ffn, MoELayer) for block in ours.blocks[1:])
    ids = random_ids()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert expected.std() > 0.3  # logits that a mapping mistake moves by far more than TOL
    assert (got - expected).abs().max().item() < TOL


def test_rope_without_interleave_matches_hf(tmp_path):
    """rope_interleave false: the rope features rotate as halves, with no reordering."""
    hf = make_hf(seed=6, rope_interleave=False)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert ours.config.mla["rope_interleave"] is False
    ids = random_ids(seed=6)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_padded_batch_matches_hf(checkpoints, q_lora_rank):
    hf, path = checkpoints[q_lora_rank]
    ours = load_pretrained(path)
    ids = random_ids(seed=1)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, 9:] = 0  # right padding
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
        alone = ours(ids[0:1, 4:])
    real = mask.bool()
    assert (got - expected)[real].abs().max().item() < TOL
    assert (got[0, 4:] - alone[0]).abs().max().item() < TOL


def test_export_loads_in_transformers_and_round_trips(checkpoints, tmp_path):
    hf, path = checkpoints[24]
    ours = load_pretrained(path)
    save_pretrained(ours, tmp_path / "out")
    names = json.loads((tmp_path / "out" / "config.json").read_text())
    assert names["model_type"] == "deepseek_v3" and names["first_k_dense_replace"] == 1
    again = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = random_ids(seed=2)
    with torch.no_grad():
        assert (again(ids).logits - hf(ids).logits).abs().max().item() < TOL
    reloaded = load_pretrained(tmp_path / "out")
    theirs = hf.state_dict()
    for layer in (1, 2):  # the selection bias survives both trips exactly
        name = f"model.layers.{layer}.mlp.gate.e_score_correction_bias"
        torch.testing.assert_close(again.state_dict()[name], theirs[name], atol=0, rtol=0)
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, atol=0, rtol=0)


def test_fused_experts_and_extra_layers_are_read(checkpoints, tmp_path):
    """transformers 5's in-memory layout (3-D gate_up_proj/down_proj per layer) dumped straight
    to a file, plus a multi-token-prediction layer past num_hidden_layers, as DeepSeek ships."""
    hf, path = checkpoints[24]
    state = {name: t.contiguous() for name, t in hf.state_dict().items()}
    assert state["model.layers.1.mlp.experts.gate_up_proj"].shape == (8, 24, 40)
    state["model.layers.3.eh_proj.weight"] = torch.zeros(40, 80)  # MTP: ignored, as HF does
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    ours = load_pretrained(tmp_path)
    ids = random_ids(seed=3)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL
    state["model.layers.1.mlp.gate.weight_scale_inv"] = torch.ones(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(LLMInternalsError, match="FP8 block-quantised"):
        load_pretrained(tmp_path)


# YaRN as DeepSeek-V3 ships it, scaled down: factor 4 over an original context of 16 (the ramp
# keeps one of the two rope frequencies and stretches the other), mscale != mscale_all_dim so
# that both cos/sin (attention_factor) and the softmax scale (mscale_all_dim^2) change.
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
        "mscale": 0.8, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}  # fmt: skip


def test_yarn_matches_hf_in_both_config_spellings(tmp_path):
    hf = make_hf(seed=4, rope_parameters={**YARN, "rope_theta": 321.0})
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    torch.testing.assert_close(ours.rope.inv_freq, hf.model.rotary_emb.inv_freq, atol=0, rtol=0)
    assert ours.rope.attention_factor == pytest.approx(hf.model.rotary_emb.attention_scaling)
    assert ours.rope.attention_factor != 1.0
    assert ours.blocks[1].attn.scale == pytest.approx(hf.model.layers[1].self_attn.scaling)
    assert ours.blocks[1].attn.scale != pytest.approx(12**-0.5)
    ids = random_ids(batch=2, seq=40, seed=5)  # past the original context of 16
    with torch.no_grad():
        expected = hf(ids).logits
        assert (ours(ids) - expected).abs().max().item() < TOL
    # DeepSeek-V3's own config.json spelling: rope_theta at the top, YaRN under rope_scaling
    published = json.loads((tmp_path / "hf" / "config.json").read_text())
    published.pop("rope_parameters")
    published |= {"rope_theta": 321.0, "rope_scaling": {**YARN, "type": YARN["rope_type"]}}
    del published["rope_scaling"]["rope_type"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(published))
    again = load_pretrained(tmp_path / "hf")
    assert again.config.rope_scaling == ours.config.rope_scaling
    save_pretrained(again, tmp_path / "out")
    exported = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (again(ids) - expected).abs().max().item() < TOL
        assert (exported(ids).logits - expected).abs().max().item() < TOL


def test_greedy_generate_equals_hf_generate(checkpoints):
    hf, path = checkpoints[24]
    ours = load_pretrained(path)
    free = generate(ours, None, PROMPTS, max_new_tokens=12, eos_token_id=None)
    eos = free[1].token_ids[3]  # an eos row 1 emits early: rows finish at different steps
    results = generate(ours, None, PROMPTS, max_new_tokens=12, eos_token_id=eos)
    assert results[1].finish_reason == "eos" and len(results[1].token_ids) <= 3
    got = [r.token_ids + ([eos] if r.finish_reason == "eos" else []) for r in results]
    assert got == hf_greedy(hf, PROMPTS, 12, eos)


def test_paged_engine_serves_it(checkpoints):
    """The engine (latent paged cache, one shared batch) == generate, in float64."""
    _, path = checkpoints[None]
    ours = load_pretrained(path, dtype=torch.float64)
    llm = LLM(ours, block_size=4, num_blocks=40, max_num_seqs=3, max_num_batched_tokens=16,
              eos_token_id=None)  # fmt: skip
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=10))
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        expected = generate(ours, None, prompt, max_new_tokens=10, eos_token_id=None).token_ids
        assert output.token_ids == expected


@pytest.mark.parametrize("with_experts", [True, False])
def test_our_own_mla_model_exports_as_deepseek_v3(tmp_path, with_experts):
    """A DecoderLM built here with config.mla (family "custom") is written as deepseek_v3, the
    one HF family with latent attention; without experts every layer is a dense one."""
    torch.manual_seed(8)
    moe = dict(d_expert=8, n_experts=4, top_k=2, router="sigmoid_grouped", n_group=2,
               topk_group=1, n_shared_experts=1, dense_layers=[0])  # fmt: skip
    config = ModelConfig(vocab_size=VOCAB, d_model=24, n_layers=2, n_heads=3, max_seq_len=32,
                         head_dim=4, moe=moe if with_experts else None,
                         mla=dict(kv_lora_rank=10, q_lora_rank=None, qk_nope_head_dim=6,
                                  qk_rope_head_dim=4, v_head_dim=5))  # fmt: skip
    ours = DecoderLM(config).eval()
    save_pretrained(ours, tmp_path)
    hf = transformers.DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.first_k_dense_replace == (1 if with_experts else 2)
    ids = random_ids(seed=8)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL
