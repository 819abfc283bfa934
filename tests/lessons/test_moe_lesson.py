"""The moe lesson's numbers, recomputed: parameter counts by HF's model classes on the meta
device, routing by plain torch (softmax, sigmoid, the group rule written out), FLOPs from the
shapes, token drops by counting capacity per expert by hand."""

from __future__ import annotations

import functools
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from rich.console import Console

from llm_internals.explain import moe_runs
from llm_internals.explain.lessons import moe as lesson_module
from llm_internals.explain.moe_block import BLOCK_MOE, block_model
from llm_internals.explain.moe_counts import MOE_MODELS
from llm_internals.explain.render import render_json, render_markdown, render_terminal
from llm_internals.explain.tiny_models import tiny_tokenizer
from llm_internals.models.published import hf_config

OUTLINE = [
    "Why MoE was needed",
    "What an expert really is",
    "The router and how it picks",
    "Where MoE sits in the block",
    "Sparse activation and the compute it saves",
    "Load balancing",
    "Advantages and challenges",
    "Why MoE powers modern LLMs",
]
HF_CLASSES = {
    "mixtral": (transformers.MixtralForCausalLM, transformers.MixtralConfig),
    "qwen2_moe": (transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig),
    "qwen3_moe": (transformers.Qwen3MoeForCausalLM, transformers.Qwen3MoeConfig),
    "deepseek_v3": (transformers.DeepseekV3ForCausalLM, transformers.DeepseekV3Config),
}


@pytest.fixture(scope="module")
def lesson():
    return lesson_module.build()


@pytest.fixture(scope="module")
def steps(lesson):
    return {s.title: s.steps for s in lesson.sections}


def test_every_outline_bullet_is_a_section_in_order(lesson):
    assert [s.title for s in lesson.sections] == OUTLINE


@functools.cache
def _hf_total_active(name):
    """Total parameters of HF's model, and those one token uses: k/E of the routed experts."""
    fields = hf_config(MOE_MODELS[name])  # the published config.json fields
    model_cls, config_cls = HF_CLASSES[fields["model_type"]]
    config = config_cls(**{k: v for k, v in fields.items() if k != "model_type"})
    with torch.device("meta"):
        model = model_cls(config)
    experts = config.num_experts_per_tok / (
        getattr(config, "num_local_experts", None) or getattr(config, "n_routed_experts", None)
        or config.num_experts
    )  # fmt: skip
    total = active = 0
    for name, p in model.named_parameters():
        total += p.numel()
        active += p.numel() * (experts if ".mlp.experts." in name else 1)
    return total, round(active), config.vocab_size * config.hidden_size


def _hf_dense_total(model_cls, **fields):
    with torch.device("meta"):
        model = model_cls(model_cls.config_class(**fields))
    return sum(p.numel() for p in model.parameters()), fields["vocab_size"] * fields["hidden_size"]


LLAMA3 = dict(vocab_size=128256, num_key_value_heads=8)
DENSE_HF = {
    "Mistral-7B": (transformers.MistralForCausalLM, dict(vocab_size=32000, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8)),
    "Llama-3-70B": (transformers.LlamaForCausalLM, dict(**LLAMA3, hidden_size=8192,
        intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)),
    "Llama-3.1-405B": (transformers.LlamaForCausalLM, dict(**LLAMA3, hidden_size=16384,
        intermediate_size=53248, num_hidden_layers=126, num_attention_heads=128)),
}  # fmt: skip


def test_published_counts_match_hf_model_classes(steps):
    rows = steps["Why MoE powers modern LLMs"][0].values["published models"].rows
    rows += steps["Why MoE was needed"][0].values["Mistral-7B and Mixtral-8x7B"].rows[:1]
    by_name = {row[0]: row for row in rows}
    for name in MOE_MODELS:
        total, active, embedding = _hf_total_active(name)
        _, shown_total, shown_active, percent, gflops = by_name[name]
        assert (shown_total, shown_active) == (total, active), name
        assert math.isclose(percent, 100 * active / total)
        assert math.isclose(gflops, 2 * (active - embedding) / 1e9)  # untied: head counts
    for name, (model_cls, fields) in DENSE_HF.items():
        total, embedding = _hf_dense_total(model_cls, **fields)
        assert by_name[name][1:] == [total, total, 100.0, 2 * (total - embedding) / 1e9], name
    # the published headline figures
    headline = {
        "Mixtral-8x7B": (46.7e9, 12.9e9),
        "Qwen1.5-MoE-A2.7B": (14.3e9, 2.7e9),
        "Qwen3-30B-A3B": (30.5e9, 3.3e9),
        "DeepSeek-V3": (671e9, 37e9),
    }  # as announced
    deepseek, llama_405b, llama_70b = (by_name[n] for n in ("DeepSeek-V3", "Llama-3.1-405B",
                                                             "Llama-3-70B"))  # fmt: skip
    assert deepseek[1] > llama_405b[1] and deepseek[4] < llama_70b[4]  # the section's claim
    for name, (total, active) in headline.items():
        assert by_name[name][1] == pytest.approx(total, rel=0.01), name
        assert by_name[name][2] == pytest.approx(active, rel=0.02), name


def test_expert_is_one_swiglu_ffn(steps):
    values = steps["What an expert really is"][0].values
    expert = moe_runs.moe_layer().experts[0]
    x = moe_runs.one_token()
    with torch.no_grad():
        gate = F.silu(F.linear(x, expert.gate_proj.weight))
        reference = F.linear(gate * F.linear(x, expert.up_proj.weight), expert.down_proj.weight)
    assert torch.equal(values["x"], x[0])
    assert torch.allclose(values["Expert_0(x)"], reference[0], atol=1e-7)
    for name, d, width, params, experts in values["experts"].rows:
        assert params == 3 * d * width
        if name in MOE_MODELS:
            f = hf_config(MOE_MODELS[name])
            assert experts == (f.get("num_local_experts") or f.get("num_experts")
                               or f["n_routed_experts"])  # fmt: skip
    assert values["experts"].rows[0][3] == sum(p.numel() for p in expert.parameters())


def _column(table, name):
    return [row[table.columns.index(name)] for row in table.rows]


def test_router_choices_recomputed_with_torch(steps):
    logits_step, mixtral, qwen, deepseek = steps["The router and how it picks"]
    layer = moe_runs.moe_layer()
    with torch.no_grad():
        logits = (moe_runs.one_token() @ layer.router.weight.T)[0]
    assert torch.allclose(logits_step.values["logits (recorded)"], logits, atol=1e-7)
    k = moe_runs.TOP_K
    # Mixtral: top-k logits, softmax over them
    table = mixtral.values["Mixtral choice"]
    top = logits.topk(k)
    assert _column(table, "expert") == top.indices.tolist()
    assert np.allclose(_column(table, "weight"), torch.softmax(top.values, -1), atol=1e-6)
    # Qwen: softmax over all, top-k as is, or renormalised
    p = torch.softmax(logits, -1)
    table = qwen.values["Qwen choice, norm_topk_prob False"]
    assert _column(table, "expert") == p.topk(k).indices.tolist()
    assert np.allclose(_column(table, "weight"), p.topk(k).values, atol=1e-6)
    normed = qwen.values["weights, norm_topk_prob True"]
    assert torch.allclose(normed, p.topk(k).values / p.topk(k).values.sum(), atol=1e-6)
    # DeepSeek: sigmoid, bias for the choice only, 4 groups of 2, the best 2 groups kept
    s = torch.sigmoid(logits)
    biased = s + torch.tensor(moe_runs.SELECTION_BIAS)
    group_score = [sorted(biased[g * 2 : g * 2 + 2].tolist())[-1] + sorted(
        biased[g * 2 : g * 2 + 2].tolist())[-2] for g in range(4)]  # fmt: skip
    kept = sorted(range(4), key=lambda g: -group_score[g])[:2]
    eligible = [e for e in range(8) if e // 2 in kept]
    chosen = sorted(eligible, key=lambda e: -float(biased[e]))[:k]
    table = deepseek.values["DeepSeek choice"]
    assert _column(table, "expert") == chosen
    assert np.allclose(_column(table, "weight"), 2.5 * s[chosen] / s[chosen].sum(), atol=1e-6)
    assert np.allclose(deepseek.values["group scores"], group_score, atol=1e-6)
    plain, grouped = s.topk(k).indices.tolist(), sorted(
        [e for e in range(8) if e // 2 in sorted(range(4), key=lambda g: -sorted(
            s[g * 2 : g * 2 + 2].tolist())[-1] - sorted(s[g * 2 : g * 2 + 2].tolist())[-2])[:2]],
        key=lambda e: -float(s[e]))[:k]  # fmt: skip
    assert f"would pick {plain}; groups alone {grouped}; groups and bias {chosen}" in (
        deepseek.text
    )
    assert len({tuple(plain), tuple(grouped), tuple(chosen)}) == 3  # each rule matters here


def test_moe_block_in_the_decoder(steps):
    values = steps["Where MoE sits in the block"][0].values
    d, moe = 8, BLOCK_MOE
    assert values["blocks"].rows == [
        [0, "GatedMLP", 3 * d * 16],  # tiny d_ff = 16
        [1, "MoELayer", moe["n_experts"] * (3 * d * moe["d_expert"] + d)],  # experts + router
    ]
    model = block_model()
    seen = {}
    model.blocks[1].ffn.register_forward_hook(lambda m, args, out: seen.update(h=args[0]))
    ids = torch.tensor([tiny_tokenizer().encode(lesson_module.TEXT)])
    with torch.no_grad():
        model(ids)
        logits = seen["h"][0] @ model.blocks[1].ffn.router.weight.T
    top = logits.topk(2)
    table = values[f"block 1 routing of {lesson_module.TEXT!r}"]
    assert [r[0] for r in table.rows] == [repr(c) for c in lesson_module.TEXT]
    assert [r[1:3] for r in table.rows] == top.indices.tolist()
    assert np.allclose([r[3:] for r in table.rows], torch.softmax(top.values, -1), atol=1e-6)


def test_flops_recomputed_from_shapes(steps):
    values = steps["Sparse activation and the compute it saves"][0].values
    d, f, e, k, t = 8, 16, 8, 2, moe_runs.BATCH
    router = 2 * t * d * e
    expected = {"sorted": router + t * k * 3 * 2 * d * f, "dense": router + t * e * 3 * 2 * d * f}
    for dispatch, experts, flops, per_token, formula in values["FLOPs counted"].rows:
        assert flops == formula == expected[dispatch] and per_token == flops // t
        assert experts == {"sorted": k, "dense": e}[dispatch]
    assert float(values["max |sorted - dense|"]) < 1e-6
    assert values["Mixtral experts run per token, params"] == 32 * 2 * 3 * 4096 * 14336
    assert values["Mixtral experts held, params"] == 32 * 8 * 3 * 4096 * 14336
    total, active, lookup = _hf_total_active("Mixtral-8x7B")
    assert values["Mixtral GFLOPs per token, top-2"] == pytest.approx(2 * (active - lookup) / 1e9)
    assert values["Mixtral GFLOPs per token if all 8 ran"] == pytest.approx(
        2 * (total - lookup) / 1e9
    )


def test_load_balancing_histograms_and_losses(steps):
    intro, run = steps["Load balancing"]
    assert intro.values["L_aux of a perfectly even router (k)"] == pytest.approx(2.0)
    table = run.values["load at the last step"]
    loads = {m: [int(c.split()[0]) for c in _column(table, m)]
             for m in ("no balancing", "aux loss", "bias update")}  # fmt: skip
    summary = {row[0]: row[1:] for row in run.values["summary"].rows}
    for method, load in loads.items():
        assert sum(load) == moe_runs.BATCH * moe_runs.TOP_K
        assert summary[method][1] == pytest.approx(np.std(load) / np.mean(load), rel=1e-6)
    for cell in [c for m in loads for c in _column(table, m)]:
        count, bar = cell.split()
        assert bar.rstrip("░") == "▇" * round(int(count) / 8) and len(bar) == 10  # 79 / 8
    start = summary["no balancing"][0]
    assert start > 0.8 and all(s[0] == start for s in summary.values())  # same skewed start
    assert summary["no balancing"][1] > 0.6  # stays collapsed
    assert summary["aux loss"][1] < 0.3 and summary["bias update"][1] < 0.3
    assert summary["aux loss"][3] < summary["no balancing"][3]
    bias = run.values["bias after the run"] / moe_runs.GAMMA  # a sum of +-1 steps
    assert torch.allclose(bias, bias.round(), atol=1e-4) and bias[0] < 0 and bias[1] < 0


def _dropped_by_hand(indices, n_experts, capacity):
    """Slot-major: every token's first choice, then every second choice; past C is dropped."""
    taken, dropped = [0] * n_experts, 0
    for slot in range(indices.shape[1]):
        for expert in indices[:, slot].tolist():
            taken[expert] += 1
            dropped += taken[expert] > capacity
    return dropped


def test_challenges_memory_and_dropping(steps):
    memory, dropping = steps["Advantages and challenges"]
    rows = {row[0]: row[1:] for row in memory.values["bf16"].rows}
    for name in ("Mixtral-8x7B", "DeepSeek-V3"):
        f = hf_config(MOE_MODELS[name])
        total, active, _ = _hf_total_active(name)
        layers = f["num_hidden_layers"] - f.get("first_k_dense_replace", 0)
        assert rows[name] == [
            2 * total,
            2 * active,
            layers * 2 * f["num_experts_per_tok"] * f["hidden_size"] * 2,
        ]
    runs = moe_runs.one_thread_runs(moe_runs.AUX_COEF, moe_runs.GAMMA)  # the lesson's, cached
    for row in dropping.values["dropped pairs"].rows:
        factor, capacity = row[0], row[1]
        pairs = moe_runs.BATCH * moe_runs.TOP_K
        assert capacity == math.ceil(factor * pairs / 8)
        for run, (dropped, percent) in zip(
            (runs["none"], runs["aux"]), (row[2:4], row[4:6]), strict=True
        ):
            with torch.no_grad():
                logits = run.batch @ run.layer.router.weight.T
            indices = logits.topk(2).indices
            assert dropped == _dropped_by_hand(indices, 8, capacity)
            assert percent == pytest.approx(100 * dropped / pairs)
    first = dropping.values["dropped pairs"].rows[1]  # capacity factor 1
    assert first[2] > 2 * first[4]  # the balanced layer drops far fewer


def test_renders_in_80_columns_markdown_and_json(lesson):
    console = Console(file=io.StringIO(), width=80, color_system=None)
    render_terminal(lesson, console)
    assert max(len(line) for line in console.file.getvalue().splitlines()) <= 80
    headings = [line for line in render_markdown(lesson).splitlines() if line.startswith("## ")]
    assert headings == [f"## {i}. {t}" for i, t in enumerate(OUTLINE, 1)]
    assert [s["title"] for s in json.loads(render_json(lesson))["sections"]] == OUTLINE


def test_shown_code_is_the_library_source(lesson):
    import inspect
    import textwrap

    from llm_internals.layers.ffn import GatedMLP
    from llm_internals.layers.moe_balance import switch_aux_loss, update_selection_bias
    from llm_internals.layers.moe_dispatch import dispatch_sorted
    from llm_internals.layers.moe_router import Router

    text = "\n".join(step.text for section in lesson.sections for step in section.steps)
    for function in (GatedMLP.forward, Router.forward, dispatch_sorted, switch_aux_loss,
                     update_selection_bias):  # fmt: skip
        assert textwrap.dedent(inspect.getsource(function)).rstrip("\n") in text


def test_balancing_inputs_change_the_run():
    from llm_internals.errors import LLMInternalsError
    from llm_internals.explain.registry import get_lesson

    weak = get_lesson("moe", {"aux_coef": "0.001", "gamma": "0"})
    assert weak.inputs == {"aux_coef": 0.001, "gamma": 0.0}
    run = {s.title: s.steps for s in weak.sections}["Load balancing"][1]
    assert "coefficient 0.001" in run.text and "gamma 0," in run.text
    summary = {row[0]: row[1:] for row in run.values["summary"].rows}
    table = run.values["load at the last step"]
    for method in ("aux loss", "bias update"):
        load = [int(c.split()[0]) for c in _column(table, method)]
        assert summary[method][1] == pytest.approx(np.std(load) / np.mean(load), rel=1e-6)
        assert summary[method][1] > 0.5  # HF's 0.001 and no bias update leave the collapse
    assert torch.equal(run.values["bias after the run"], torch.zeros(8))  # gamma 0: no update
    with pytest.raises(LLMInternalsError, match="gamma"):
        get_lesson("moe", {"gamma": "-1"})
