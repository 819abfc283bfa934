"""The rmsnorm lesson's numbers against F.layer_norm and HF's LlamaRMSNorm; timing only sanity."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from llm_internals.explain.lessons import rmsnorm as lesson_module


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _hf_rms(x, gain):
    norm = LlamaRMSNorm(x.shape[-1], eps=lesson_module.EPS)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(gain))
        return norm(x)


X = torch.tensor([lesson_module.EXAMPLE])
G = lesson_module.GAIN


def test_layernorm_recap_matches_functional(steps):
    v = steps["LayerNorm recap"][0].values
    mean = sum(lesson_module.EXAMPLE) / 4
    var = sum((a - mean) ** 2 for a in lesson_module.EXAMPLE) / 4
    assert math.isclose(v["mean"].item(), mean, rel_tol=1e-6)
    assert math.isclose(v["var"].item(), var, rel_tol=1e-6)
    assert torch.allclose(v["normalized"], F.layer_norm(X, (4,), eps=lesson_module.EPS)[0],
                          atol=1e-6)  # fmt: skip
    ref = F.layer_norm(X, (4,), torch.tensor(G), torch.zeros(4), eps=lesson_module.EPS)
    assert torch.allclose(v["output (b = 0)"], ref[0], atol=1e-6)


def test_rmsnorm_example_matches_hf(steps):
    v = steps["A numeric example"][0].values
    ms = sum(a * a for a in lesson_module.EXAMPLE) / 4
    assert math.isclose(v["mean(x^2)"].item(), ms, rel_tol=1e-6)
    assert math.isclose(v["rms = sqrt(mean(x^2) + eps)"].item(), math.sqrt(ms + 1e-6), rel_tol=1e-6)
    assert torch.allclose(v["x / rms"], _hf_rms(X, [1.0] * 4)[0], atol=1e-6)
    assert torch.allclose(v["times g"], _hf_rms(X, G)[0], atol=1e-6)


def test_scale_invariance_and_differences(steps):
    v = steps["Why normalize"][0].values
    inputs = v["inputs: x * 0.1, x, x * 100"]
    assert torch.allclose(v["RMSNorm outputs"], _hf_rms(inputs, G), atol=1e-6)
    assert torch.allclose(v["RMSNorm outputs"][0], v["RMSNorm outputs"][2], atol=1e-3)
    d = steps["Differences"][0].values
    centered = X - X.mean()
    assert torch.allclose(d["x - mean(x)"], centered[0])
    assert torch.allclose(d["LayerNorm(x) / g"], F.layer_norm(X, (4,), eps=1e-6)[0], atol=1e-6)
    assert torch.allclose(d["RMSNorm(x) / g"], _hf_rms(X, [1.0] * 4)[0], atol=1e-6)
    assert torch.allclose(d["RMSNorm(x - mean) / g"], d["LayerNorm(x - mean) / g"], atol=1e-5)
    assert not torch.allclose(d["RMSNorm(x) / g"], d["LayerNorm(x) / g"], atol=1e-2)


def test_timing_table_is_present_and_sane(steps):
    v = steps["Why modern LLMs prefer it"][0].values
    rows = v["time per call (ms)"].rows
    assert len(rows) == 2
    for _, ln_ms, rms_ms, ratio in rows:
        assert 0 < ln_ms < 10_000 and 0 < rms_ms < 10_000
        assert math.isclose(ratio, ln_ms / rms_ms)
    assert "RMSNorm took" in v["verdict"]


def test_pre_norm_flow(steps):
    rows = steps["Where it sits: pre-norm"][0].values["one block"].rows
    names = [name for _, name, _ in rows]
    assert names == ["embedding", "norm_output", "attention_output", "residual_after_attention",
                     "norm_output", "ffn_output", "block_output", "norm_output"]  # fmt: skip
    torch.manual_seed(0)
    from llm_internals.models.config import ModelConfig
    from llm_internals.models.decoder import DecoderLM

    model = DecoderLM(ModelConfig(vocab_size=32, d_model=8, n_layers=1, n_heads=2, d_ff=16,
                                  max_seq_len=8))  # fmt: skip
    h = model.tok_emb.weight[:6].detach()
    rms = lambda t: float(t.pow(2).mean(-1).sqrt().mean())  # noqa: E731
    assert math.isclose(rows[0][2], rms(h), rel_tol=1e-5)
    normed = _hf_rms(h, model.blocks[0].norm1.weight.tolist())
    assert math.isclose(rows[1][2], rms(normed), rel_tol=1e-5)
    for label, name, value in rows:
        if name == "norm_output":
            assert 0.9 < value < 1.01, label


def test_code_section_shows_the_current_rmsnorm_source(steps):
    import inspect

    from llm_internals.layers.norm import RMSNorm

    (step,) = steps["RMSNorm in code"]
    assert f"```python\n{inspect.getsource(RMSNorm).rstrip()}\n```" in step.text
    shown = step.values["RMSNorm(x) for the example"]
    expected = F.rms_norm(X, (4,), weight=torch.tensor(G), eps=lesson_module.EPS)[0]
    assert torch.allclose(shown, expected, atol=1e-6)


def test_summary_counts_match_torch_and_hf_llama(steps):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_internals.models.published import hf_config

    rows = steps["Summary"][0].values["LayerNorm vs RMSNorm"].rows
    fields = hf_config(lesson_module.SUMMARY_MODEL)
    d = fields["hidden_size"]
    assert rows[2][1:] == [
        sum(p.numel() for p in torch.nn.LayerNorm(d).parameters()),
        sum(p.numel() for p in LlamaRMSNorm(d).parameters()),
    ]
    with torch.device("meta"):
        hf = LlamaForCausalLM(LlamaConfig(**fields))
    hf_norms = sum(p.numel() for n, p in hf.named_parameters() if "norm" in n)
    assert rows[3][1:] == [2 * hf_norms, hf_norms]
