"""The gqa lesson's numbers: head grouping recomputed with plain torch, KV bytes from the published
config.json values, and the uptraining logit change recomputed by pooling inside HF's own model."""

import math
import tempfile

import pytest
import torch
import torch.nn.functional as F
import transformers

from llm_internals.explain.lessons import gqa as lesson_module


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def test_head_grouping_matches_plain_torch(steps):
    values = steps["How it works: head grouping"][0].values
    assert values["query head -> K/V head"].rows == [[0, 0], [1, 0], [2, 1], [3, 1]]
    assert values["q shape"] == "(4, 3, 2)" and values["k shape"] == "(2, 3, 2)"
    attention, x, _ = lesson_module.grouped_attention()
    with torch.no_grad():
        q = (x[0] @ attention.q_proj.weight.T).view(3, 4, 2).transpose(0, 1)
        k = (x[0] @ attention.k_proj.weight.T).view(3, 2, 2).transpose(0, 1)
    assert torch.allclose(values["K/V head 0 keys"], k[0], atol=1e-6)
    causal = torch.ones(3, 3).triu(1).bool()
    for h in (0, 1):  # both query heads of group 0 use K/V head 0
        scores = (q[h] @ k[0].T / math.sqrt(2)).masked_fill(causal, -math.inf)
        assert torch.allclose(values[f"weights, query head {h}"], scores.softmax(-1), atol=1e-6)


def test_gqa_equals_mha_with_repeated_kv(steps):
    shown = steps["GQA generalizes MHA and MQA"][0].values
    assert next(iter(shown.values())) < 1e-6
    attention, x, _ = lesson_module.grouped_attention()
    with torch.no_grad():
        q = (x @ attention.q_proj.weight.T).view(1, 3, 4, 2).transpose(1, 2)
        k = (x @ attention.k_proj.weight.T).view(1, 3, 2, 2).transpose(1, 2)
        v = (x @ attention.v_proj.weight.T).view(1, 3, 2, 2).transpose(1, 2)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        ref = ref.transpose(1, 2).reshape(1, 3, 8) @ attention.o_proj.weight.T
        ours = attention(x, causal=True)
    assert torch.allclose(ours, ref, atol=1e-6)


# (layers, heads, kv heads, head_dim) from each model's config.json
PUBLISHED = {"gpt2": (12, 12, 12, 64), "llama-2-7b": (32, 32, 32, 128),
             "falcon-7b": (32, 71, 1, 64), "mistral-7b": (32, 32, 8, 128),
             "llama-3-8b": (32, 32, 8, 128), "llama-3-70b": (80, 64, 8, 128),
             "llama-3.1-405b": (126, 128, 8, 128)}  # fmt: skip


def test_kv_table_matches_published_configs(steps):
    table = steps["KV-cache bytes of real models"][0].values["KV cache"]
    assert [r[0] for r in table.rows] == list(PUBLISHED)
    for name, kind, layers, heads, kv, hd, kib, gib, ratio in table.rows:
        assert (layers, heads, kv, hd) == PUBLISHED[name]
        per_token = 2 * layers * kv * hd * 2  # K and V, bf16
        assert kib == per_token / 1024
        assert gib == per_token * lesson_module.CONTEXT / 2**30
        assert ratio == heads / kv
        assert kind == ("MHA" if kv == heads else "MQA" if kv == 1 else "GQA")
    variants = steps["GQA"][0].values["variants"].rows
    assert [r[2] for r in variants] == [2 * 32 * kv * 128 * 2 / 1024 for kv in (32, 8, 4, 1)]
    for _, kv, _, params in variants:
        layer = torch.nn.ModuleList(
            torch.nn.Linear(4096, kv * 128, bias=False, device="meta") for _ in "kv"
        )
        assert params == sum(p.numel() for p in layer.parameters())


def _hf_pooled_logits(hf, groups, ids):
    """Mean-pool K/V heads inside HF's own state dict and run HF's Llama with fewer KV heads."""
    config = transformers.LlamaConfig(**{**lesson_module.TINY_LLAMA, "num_key_value_heads": groups})
    pooled = transformers.LlamaForCausalLM(config).eval()
    state = hf.state_dict()
    n, hd = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    for name, tensor in state.items():
        if "k_proj" in name or "v_proj" in name:
            state[name] = tensor.view(groups, n // groups, hd, -1).mean(1).reshape(groups * hd, -1)
    pooled.load_state_dict(state)
    with torch.no_grad():
        return pooled(ids).logits


def test_uptraining_logit_change_matches_hf(steps):
    values = steps["Uptraining: MHA to GQA by mean-pooling"][0].values
    assert float(values["import parity: max |ours - HF| logits"]) < 1e-4
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as directory:
        hf = lesson_module.tiny_llama(directory)
    with torch.no_grad(), lesson_module.one_thread():
        reference = hf(ids).logits
    rows = values["logit change"].rows
    assert [r[0] for r in rows] == list(lesson_module.UPTRAIN_GROUPS)
    for groups, max_diff, mean_diff, kl, top1 in rows:
        with lesson_module.one_thread():
            logits = _hf_pooled_logits(hf, groups, ids)
        diff = (logits - reference).abs()
        assert math.isclose(max_diff, float(diff.max()), rel_tol=1e-3, abs_tol=1e-5)
        assert math.isclose(mean_diff, float(diff.mean()), rel_tol=1e-3, abs_tol=1e-6)
        ref_kl = F.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True,
                          reduction="none").sum(-1).mean()  # fmt: skip
        assert math.isclose(kl, float(ref_kl), rel_tol=1e-3, abs_tol=1e-7)
        agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean() * 100
        assert math.isclose(top1, float(agree), abs_tol=1e-6)
    assert rows[0][1] < 1e-4 and rows[-1][1] > rows[0][1]  # 8 of 8 heads: nothing changes


def _kv_bytes(fields, kv_heads, tokens):
    """K and V, every layer, bf16, written from the HF config's fields."""
    head_dim = fields.get("head_dim") or fields["hidden_size"] // fields["num_attention_heads"]
    return 2 * fields["num_hidden_layers"] * kv_heads * head_dim * 2 * tokens


def test_big_picture_terminology_and_summary_match_the_hf_config(steps):
    from llm_internals.models.published import hf_config

    fields = hf_config(lesson_module.PICTURE_MODEL)
    heads, kv = fields["num_attention_heads"], fields["num_key_value_heads"]
    context = lesson_module.CONTEXT
    rows = steps["Summary"][0].values["KV cache by variant"].rows
    expected = [(name, g) for name, g in (("MHA", heads), ("GQA", kv), ("MQA", 1))]
    for row, (name, g) in zip(rows, expected, strict=True):
        assert row == [name, g, heads // g, _kv_bytes(fields, g, 1), _kv_bytes(fields, g, context)]
    picture = steps["The big picture"][0].values
    assert picture["MHA cache bytes"] == _kv_bytes(fields, heads, context)
    assert picture["GQA cache bytes"] == _kv_bytes(fields, kv, context)
    assert picture["MQA cache bytes"] == _kv_bytes(fields, 1, context)
    terms = {r[0]: r[2] for r in steps["Terminology"][0].values["terms"].rows}
    assert terms["H (n_heads)"] == heads and terms["G (n_kv_heads)"] == kv
    assert terms["H / G (n_rep)"] == heads // kv
    assert terms["KV cache"] == _kv_bytes(fields, kv, 1)
