"""Logit parity with HF transformers for every decoder family, and the save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from llm_internals.models import DecoderLM, load_pretrained, save_pretrained

TOL = 1e-4
VOCAB = 128
DECODER_FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")


def _random_ids(batch=3, seq=12, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


PATHS = [("scratch", False), ("sdpa", False), ("sdpa", True)]  # written out ... fast path


@pytest.mark.parametrize(("attn_impl", "fused_ops"), PATHS)
@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_logits_match_hf(hf_checkpoints, family, attn_impl, fused_ops):
    hf, path = hf_checkpoints[family]
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    assert isinstance(ours, DecoderLM) and ours.config.family == family
    ids = _random_ids()
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    assert diff < TOL


@pytest.mark.parametrize(("attn_impl", "fused_ops"), PATHS)
@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_padded_batch_matches_hf(hf_checkpoints, family, attn_impl, fused_ops):
    """Left- and right-padded rows: real tokens' logits agree; positions count real tokens only."""
    hf, path = hf_checkpoints[family]
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    ids = _random_ids(seed=1)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, 9:] = 0  # right padding
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)  # positions inferred from the mask
    real = mask.bool()
    assert (got - expected)[real].abs().max().item() < TOL
    assert not torch.isnan(got).any()
    # Each padded row equals the same tokens run alone, without padding.
    with torch.no_grad():
        alone = ours(ids[0:1, 4:])
    assert (got[0, 4:] - alone[0]).abs().max().item() < TOL


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_round_trip_through_save_pretrained_loads_in_transformers(hf_checkpoints, family, tmp_path):
    hf, path = hf_checkpoints[family]
    ours = load_pretrained(path)
    save_pretrained(ours, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(hf)
    ids = _random_ids(seed=2)
    with torch.no_grad():
        assert (reloaded(ids).logits - hf(ids).logits).abs().max().item() < TOL
        assert (load_pretrained(tmp_path)(ids) - ours(ids)).abs().max().item() == 0.0


def test_sharded_checkpoints_both_ways(hf_decoder, tmp_path):
    hf = hf_decoder("llama", seed=3)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    ours = load_pretrained(tmp_path / "hf")
    ids = _random_ids(seed=3)
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL
    save_pretrained(ours, tmp_path / "ours", max_shard_bytes=30_000)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "ours" / "model.safetensors").exists()
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (reloaded(ids).logits - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("llama", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
        ("llama", {"num_key_value_heads": 1}),  # MQA
        ("qwen3", {"tie_word_embeddings": True, "attention_bias": True}),
        ("gpt2", {"activation_function": "gelu", "tie_word_embeddings": False, "n_inner": 80}),
        ("mistral", {"sliding_window": 5}),
        ("qwen3", {"head_dim": 24}),  # head_dim * heads != hidden_size, as in Qwen3 checkpoints
        ("llama", {"rms_norm_eps": 0.3, "rope_theta": 40.0}),
        (
            "llama",
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 16,
                }
            },
        ),
    ],
)
def test_config_variants_match_hf(hf_decoder, family, overrides, tmp_path):
    hf = hf_decoder(family, seed=4, **overrides)
    hf.save_pretrained(tmp_path / "in")
    ours = load_pretrained(tmp_path / "in")
    ids = _random_ids(batch=2, seq=20, seed=4)
    with torch.no_grad():
        expected = hf(ids).logits
        assert (ours(ids) - expected).abs().max().item() < TOL
        ours.set_attn_impl("sdpa")
        ours.set_fused_ops(True)
        assert (ours(ids) - expected).abs().max().item() < TOL
    save_pretrained(ours, tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (reloaded(ids).logits - expected).abs().max().item() < TOL


def test_original_gpt2_names_without_prefix_and_mask_buffers(hf_decoder, tmp_path):
    """The original GPT-2 files name tensors "h.0.attn.c_attn.weight" and store mask buffers."""
    from safetensors.torch import load_file, save_file

    hf = hf_decoder("gpt2", seed=5)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {name.removeprefix("transformer."): t for name, t in tensors.items()}
    renamed["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    save_file(renamed, tmp_path / "model.safetensors", {"format": "pt"})
    ids = _random_ids(seed=5)
    with torch.no_grad():
        assert (load_pretrained(tmp_path)(ids) - hf(ids).logits).abs().max().item() < TOL


def test_meta_interleaved_rope_layout_exports_to_hf_half_layout(hf_checkpoints, tmp_path):
    """A model in Meta's interleaved layout (q/k rows permuted) gives the same logits and is
    written back in HF's rotate-half layout."""
    from llm_internals.layers.rope import half_to_interleaved

    hf, path = hf_checkpoints["llama"]
    ours = load_pretrained(path)
    meta_layout = DecoderLM(ours.config.replace(rope_layout="interleaved")).eval()
    state = ours.state_dict()
    for i in range(ours.config.n_layers):
        for proj, heads in (("q", ours.config.n_heads), ("k", ours.config.n_kv_heads)):
            name = f"blocks.{i}.attn.{proj}_proj.weight"
            state[name] = half_to_interleaved(state[name], heads)
    meta_layout.load_state_dict(state)
    ids = _random_ids(seed=6)
    with torch.no_grad():
        expected = hf(ids).logits
        assert (meta_layout(ids) - expected).abs().max().item() < TOL
    save_pretrained(meta_layout, tmp_path)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (reloaded(ids).logits - expected).abs().max().item() < TOL
