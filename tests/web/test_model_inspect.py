"""The Model view's numbers (web/model_inspect.py) against independent computations: HF
transformers' own attention weights (output_attentions=True) for imported GPT-2 and Llama (GQA,
RoPE) folders, the model's logits, the library sampler, and the MoE router run by hand."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.tiny_models import (
    ORIGINAL_TRANSFORMER,
    TINY_ALPHABET,
    tiny_decoder,
    tiny_tokenizer,
)
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.trace import recording
from llm_internals.web import model_inspect as mi

PROMPT = "the cat sat, on a mat."
HF_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=len(TINY_ALPHABET), n_embd=16, n_layer=2, n_head=4, n_positions=64
    ),
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=len(TINY_ALPHABET),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    ),  # fmt: skip
}


def hf_folder(tmp_path, family: str):
    """A random tiny HF model saved with save_pretrained, with the tiny character tokenizer."""
    torch.manual_seed(0)
    config = HF_CONFIGS[family]()
    config._attn_implementation = "eager"
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    tiny_tokenizer().save(tmp_path / "tokenizer.json")
    return hf


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_attention_equals_transformers_output_attentions(tmp_path, family):
    hf = hf_folder(tmp_path, family)
    model, tokenizer, _ = load_model_and_tokenizer(tmp_path)
    ids = mi.encode_prompt(tokenizer, PROMPT)
    run = mi.run_prompt(model, ids)
    with torch.no_grad():
        ref = hf(torch.tensor([ids]), output_attentions=True)
    assert len(run.attention) == len(ref.attentions) == 2
    for ours, theirs in zip(run.attention, ref.attentions, strict=True):
        torch.testing.assert_close(ours, theirs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(run.logits, ref.logits[0], rtol=0, atol=1e-4)
    assert model.config.attn_impl == "sdpa"  # switched back after the recorded run


def test_tokens_and_pieces_come_from_the_tokenizer():
    tokenizer = tiny_tokenizer()
    ids = mi.encode_prompt(tokenizer, PROMPT)
    assert ids == tokenizer.encode(PROMPT)
    assert mi.token_pieces(tokenizer, ids) == list(PROMPT)


def test_prompt_limits_name_the_limit():
    tokenizer = tiny_tokenizer()
    with pytest.raises(LLMInternalsError, match="at most 8"):
        mi.encode_prompt(tokenizer, "a" * 9, limit=8)
    assert len(mi.encode_prompt(tokenizer, "a" * 8, limit=8)) == 8
    with pytest.raises(LLMInternalsError, match="empty"):
        mi.encode_prompt(tokenizer, "")


@pytest.mark.parametrize("layout", [{}, ORIGINAL_TRANSFORMER], ids=["pre-norm", "post-norm"])
def test_residual_norms_and_logit_lens_follow_the_residual_stream(layout):
    model, tokenizer = tiny_decoder(3, **layout), tiny_tokenizer()
    ids = tokenizer.encode(PROMPT)
    run = mi.run_prompt(model, ids)
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    stream = [rec.get("embedding")[0]] + [h[0] for h in rec.all("block_output")]
    norms = mi.residual_norms(run)
    assert len(norms) == model.config.n_layers + 1
    for layer, h in enumerate(stream):
        assert norms[layer] == pytest.approx(torch.linalg.vector_norm(h, dim=-1).tolist(), 1e-6)
    lens = mi.logit_lens(model, run, tokenizer, k=3)
    # the last layer's lens is the model's own prediction, at every position
    probs = torch.softmax(run.logits, dim=-1)
    for t, top in enumerate(lens[-1]):
        values, token_ids = probs[t].topk(3)
        assert [e["id"] for e in top] == token_ids.tolist()
        assert [e["prob"] for e in top] == pytest.approx(values.tolist(), abs=1e-6)
    # layer 0: the embedding through the final norm and head, computed here by hand
    with torch.no_grad():
        final_norm = model.norm_f if model.norm_f is not None else torch.nn.Identity()
        first = torch.softmax(model.lm_head(final_norm(stream[0])), dim=-1)
    assert [e["id"] for e in lens[0][2]] == first[2].topk(3).indices.tolist()


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"), [(1.0, 1.0, 0), (0.5, 0.9, 0), (2.0, 1.0, 3), (0.0, 1.0, 0)]
)
def test_next_token_distribution_is_the_samplers(temperature, top_p, top_k):
    model, tokenizer = tiny_decoder(1), tiny_tokenizer()
    run = mi.run_prompt(model, tokenizer.encode(PROMPT))
    params = mi.sampling_params(temperature, top_p, top_k)
    shown = mi.next_token_distribution(run.logits[-1], tokenizer, params, k=len(TINY_ALPHABET))
    logits = run.logits[-1:]
    if temperature == 0:  # greedy: the sampler's argmax
        token = Sampler()(logits, [SamplingParams(temperature=0.0)]).item()
        assert shown["tokens"][0]["id"] == token and shown["tokens"][0]["prob"] == 1.0
        return
    z = logits / temperature
    if top_k:
        z = z.masked_fill(z < z.topk(top_k).values[:, -1:], float("-inf"))
    if top_p < 1.0:  # HF's TopPLogitsWarper, written out
        sorted_z, order = z.sort(descending=True)
        cum = torch.softmax(sorted_z, dim=-1).cumsum(-1)
        drop = (cum - torch.softmax(sorted_z, dim=-1)) >= top_p
        z = z.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    expected = torch.softmax(z, dim=-1)[0]
    by_id = {e["id"]: e["prob"] for e in shown["tokens"]}
    assert by_id == pytest.approx({i: p for i, p in enumerate(expected.tolist())}, abs=1e-6)
    assert shown["kept"] == int((expected > 0).sum())


def test_expert_routing_matches_the_router_run_by_hand():
    moe = dict(d_expert=8, n_experts=4, top_k=2)
    model, tokenizer = tiny_decoder(2, moe=moe), tiny_tokenizer()
    ids = tokenizer.encode(PROMPT)
    run = mi.run_prompt(model, ids)
    assert [r["layer"] for r in run.routing] == [0, 1]
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    for entry, h in zip(run.routing, rec.all("residual_after_attention"), strict=True):
        block = model.blocks[entry["layer"]]
        logits = block.norm2(h[0]) @ block.ffn.router.weight.T
        weights, experts = torch.softmax(logits, dim=-1).topk(2)
        assert entry["experts"] == experts.tolist()
        expected = weights / weights.sum(-1, keepdim=True)
        torch.testing.assert_close(torch.tensor(entry["weights"]), expected, rtol=0, atol=1e-6)
    assert mi.run_prompt(tiny_decoder(2), ids).routing == []


def test_mla_attention_is_per_head_in_both_modes():
    """Absorbed MLA records its heads folded into the query axis; the view unfolds them, so
    both modes show the same (heads, T, T) weights."""
    mla = dict(kv_lora_rank=12, q_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4,
               v_head_dim=5)  # fmt: skip
    ids = tiny_tokenizer().encode(PROMPT)
    runs = [mi.run_prompt(tiny_decoder(4, n_heads=3, d_model=12, mla=mla | dict(attn_mode=mode)),
                          ids) for mode in ("naive", "absorbed")]  # fmt: skip
    for naive, absorbed in zip(runs[0].attention, runs[1].attention, strict=True):
        assert naive.shape == (3, len(ids), len(ids))
        torch.testing.assert_close(absorbed, naive, rtol=0, atol=1e-6)
