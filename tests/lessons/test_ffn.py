"""The ffn lesson's numbers, recomputed with torch.nn.functional and HF models on the meta
device."""

import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from llm_internals.explain.ffn_runs import TOP_UNITS, make_layers
from llm_internals.explain.lessons import ffn as lesson_module


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def test_mlp_and_swiglu_steps_match_functional(steps):
    mlp, gated = make_layers()
    x = lesson_module.token()
    plain, swiglu = steps["Step by step"]
    with torch.no_grad():
        up = F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)
        act = F.gelu(up)
        out = F.linear(act, mlp.down_proj.weight, mlp.down_proj.bias)
        gate = F.silu(F.linear(x, gated.gate_proj.weight))
        up2 = F.linear(x, gated.up_proj.weight)
        out2 = F.linear(gate * up2, gated.down_proj.weight)
    assert torch.equal(plain.values["x"], x[0])
    assert torch.allclose(plain.values["W_up x + b_up"], up[0], atol=1e-6)
    assert torch.allclose(plain.values["GELU(...)"], act[0], atol=1e-6)
    assert torch.allclose(plain.values["W_down (...) + b_down"], out[0], atol=1e-6)
    assert torch.allclose(swiglu.values["silu(W_gate x)"], gate[0], atol=1e-6)
    assert torch.allclose(swiglu.values["W_up x"], up2[0], atol=1e-6)
    assert torch.allclose(swiglu.values["gate * up"], (gate * up2)[0], atol=1e-6)
    assert torch.allclose(swiglu.values["output"], out2[0], atol=1e-6)


def test_activation_table_matches_torch(steps):
    table = steps["Activations"][0].values["library activations"]
    for x, r, g, t, s in table.rows:
        v = torch.tensor(x)
        assert math.isclose(r, max(x, 0.0))
        assert math.isclose(g, F.gelu(v).item(), abs_tol=1e-6)
        assert math.isclose(t, F.gelu(v, approximate="tanh").item(), abs_tol=1e-6)
        assert math.isclose(s, F.silu(v).item(), abs_tol=1e-6)


def _hf_ffn_and_total(model_cls, config, ffn_markers):
    with torch.device("meta"):
        model = model_cls(config)
    ffn = sum(p.numel() for n, p in model.named_parameters()
              if any(m in n for m in ffn_markers) and "attention" not in n)  # fmt: skip
    return ffn, sum(p.numel() for p in model.parameters())


def test_ffn_shares_match_hf_models(steps):
    table = steps["Share of the parameters"][0].values["FFN parameters"]
    rows = {row[0]: row for row in table.rows}
    llama = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)  # fmt: skip
    references = {
        "BERT-base": (transformers.BertModel, transformers.BertConfig(),
                      ("intermediate.dense", "output.dense")),
        "GPT-2 (124M)": (transformers.GPT2LMHeadModel, transformers.GPT2Config(), (".mlp.",)),
        "Llama-3-8B": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**llama),
                       (".mlp.",)),
        "SmolLM-135M": (transformers.LlamaForCausalLM, transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True), (".mlp.",)),
    }  # fmt: skip
    for name, (cls, config, markers) in references.items():
        ffn, total = _hf_ffn_and_total(cls, config, markers)
        _, shown_ffn, shown_total, pct, _ = rows[name]
        assert (shown_ffn, shown_total) == (ffn, total), name
        assert math.isclose(pct, 100 * ffn / total)
    qwen3 = transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
    )  # fmt: skip
    ffn, total = _hf_ffn_and_total(transformers.Qwen3ForCausalLM, qwen3, (".mlp.",))
    assert rows["Qwen3-0.6B"][1:3] == [ffn, total]
    # Llama-3-70B by hand: 80 layers of 3 x 8192 x 28672.
    assert rows["Llama-3-70B"][1] == 80 * 3 * 8192 * 28672


def test_expand_contract_shapes(steps):
    values = steps["Expand then contract"][0].values
    assert values["shapes here"] == "x (1, 4) -> (1, 16) -> (1, 4)"
    published = {"GPT-2 (124M)": (768, 3072, "mlp", "gelu_tanh"),
                 "Llama-3-8B": (4096, 14336, "gated", "silu"),
                 "Llama-3-70B": (8192, 28672, "gated", "silu")}  # fmt: skip
    for name, d, f, ratio, kind, act in values["real models"].rows:
        assert (d, f, kind, act) == published[name] and ratio == f / d


def test_moe_rows():
    (_, dense_ffn, dense_total, _), (_, experts, total, active) = lesson_module.moe_rows()
    assert dense_ffn == 32 * 3 * 4096 * 14336
    assert experts == 8 * dense_ffn
    assert total == dense_total + 7 * dense_ffn
    assert active == dense_total + dense_ffn
    assert 46.6e9 < total < 46.8e9 and 12.8e9 < active < 13.0e9  # Mixtral's published 46.7B/12.9B


def _plain_reference():
    mlp, _ = make_layers()
    x = lesson_module.token()
    with torch.no_grad():
        up = F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias)[0]
        act = F.gelu(up)
    return mlp, up, act


def test_analogy_and_what_it_learns_match_functional(steps):
    mlp, up, act = _plain_reference()
    analogy = steps["An analogy"][0].values
    assert analogy["pattern detectors (d_ff hidden units)"] == up.numel()
    assert analogy["firing (GELU output > 0) for the example token"] == int((act > 0).sum())
    learns = steps["What it learns"][0].values
    rows = learns["strongest units"].rows
    expected_units = sorted(range(up.numel()), key=lambda i: -abs(float(act[i])))
    assert [r[0] for r in rows] == expected_units[:TOP_UNITS]
    w_down = mlp.down_proj.weight.detach()
    for unit, pre, activation, norm in rows:
        assert math.isclose(pre, float(up[unit]), abs_tol=1e-6)
        assert math.isclose(activation, float(act[unit]), abs_tol=1e-6)
        assert math.isclose(norm, float((act[unit] * w_down[:, unit]).norm()), rel_tol=1e-5)
    with torch.no_grad():
        output = F.linear(act, w_down, mlp.down_proj.bias)
    assert torch.allclose(learns["sum_i act_i v_i + b_down"], output, atol=1e-6)
    assert torch.allclose(learns["FFN output (recorded)"], output, atol=1e-6)


def test_why_important_counts_match_named_parameters_and_hf(steps):
    from llm_internals.explain.tiny_models import tiny_decoder

    rows = steps["Why it is important"][0].values["FFN vs attention"].rows
    tiny = dict(tiny_decoder().named_parameters())
    ffn = sum(p.numel() for n, p in tiny.items() if ".ffn." in n)
    attention = sum(p.numel() for n, p in tiny.items() if ".attn." in n)
    assert rows[0][1:4] == [ffn, attention, ffn / attention]
    llama = transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                     num_hidden_layers=32, num_attention_heads=32,
                                     num_key_value_heads=8)  # fmt: skip
    hf_ffn, hf_total = _hf_ffn_and_total(transformers.LlamaForCausalLM, llama, (".mlp.",))
    hf_attention, _ = _hf_ffn_and_total(transformers.LlamaForCausalLM, llama, (".self_attn.",))
    assert rows[1][1:3] == [hf_ffn, hf_attention]
    assert math.isclose(rows[1][4], 100 * hf_ffn / hf_total)
    assert all(row[3] > 1 for row in rows)


def _swiglu(expert, x):
    gate = F.silu(F.linear(x, expert.gate_proj.weight))
    return F.linear(gate * F.linear(x, expert.up_proj.weight), expert.down_proj.weight)


def test_moe_section_runs_the_real_router(steps):
    values = steps["FFNs in mixture-of-experts models"][0].values
    layer, _ = lesson_module.moe_example()
    x = lesson_module.token()
    with torch.no_grad():
        logits = (x @ layer.router.weight.T)[0]
        top = logits.topk(lesson_module.MOE_ACTIVE)
        weights = torch.softmax(top.values, -1)
        output = sum(w * _swiglu(layer.experts[int(e)], x)[0]
                     for w, e in zip(weights, top.indices, strict=True))  # fmt: skip
    assert torch.allclose(values["router logits x W_g^T"], logits, atol=1e-6)
    rows = values["chosen experts"].rows
    assert [r[1] for r in rows] == top.indices.tolist()
    assert all(
        math.isclose(r[2], float(w), abs_tol=1e-6) for r, w in zip(rows, weights, strict=True)
    )
    assert torch.allclose(values["MoE layer output"], output, atol=1e-6)
    assert torch.allclose(values["sum_j w_j Expert_j(x)"], output, atol=1e-6)
