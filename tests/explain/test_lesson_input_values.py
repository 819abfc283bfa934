"""Lessons rebuilt with non-default inputs (what `explain --set` and the web explorer's form do)
show the numbers the library computes for those inputs, recomputed here independently: plain
torch and math for scaling and softmax, corpus counts for sampling, published configs and the
closed-form FLOP count for the KV cache, the closed-form timeline of the paged engine."""

from __future__ import annotations

import math
import re

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.lesson import Lesson, Table
from llm_internals.explain.lesson_corpus import lesson_corpus
from llm_internals.explain.registry import get_lesson


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def steps(lesson: Lesson) -> dict[str, list]:
    return {s.title: s.steps for s in lesson.sections}


def test_scaling_with_d_k_128():
    lesson = get_lesson("scaling", {"d_k": "128"})
    assert lesson.inputs == {"d_k": 128}
    gen = torch.Generator().manual_seed(128)  # the lesson's seed 0 + d_k
    q = torch.randn(1024, 128, generator=gen)
    k = torch.randn(1024, 16, 128, generator=gen)
    scores = torch.einsum("rd,rkd->rk", q, k)
    shown = steps(lesson)["Putting it all together"][0].values
    assert torch.allclose(shown["1. scores = q . k"], scores[0], atol=1e-4)
    assert torch.allclose(shown["3. weights = softmax(scaled)"],
                          torch.softmax(scores[0] / math.sqrt(128), -1), atol=1e-6)  # fmt: skip
    assert math.isclose(shown["std of all scaled scores"], float((scores / math.sqrt(128)).std()),
                        rel_tol=1e-4)  # fmt: skip
    table = steps(lesson)["Checking Var(q . k) = d_k"][0].values["variance of q . k"]
    row = next(r for r in table.rows if r[0] == 128)
    assert math.isclose(row[2], float(scores.var()), rel_tol=1e-4)


def test_softmax_with_temperature_3():
    values = steps(get_lesson("softmax", {"temperature": "3"}))["Temperature"][0].values
    exps = [math.exp(x / 3) for x in (2.0, 1.0, 0.1)]
    expected = [e / sum(exps) for e in exps]
    assert torch.allclose(values["softmax(logits / T)"], torch.tensor(expected), atol=1e-7)
    row = next(r for r in values["probabilities by temperature"].rows if r[0] == 3.0)
    assert row[1:4] == pytest.approx(expected, abs=1e-6)
    assert row[4] == pytest.approx(-sum(p * math.log2(p) for p in expected), abs=1e-6)


def _kept(table: Table) -> dict[str, tuple[bool, float]]:
    i, j = table.columns.index("kept"), table.columns.index("renormalized")
    return {row[0]: (row[i], row[j]) for row in table.rows}


def test_sampling_with_its_four_inputs():
    lesson = get_lesson("sampling", {"temperature": "1.3", "top_k": "5", "top_p": "0.5",
                                     "min_p": "0.2"})  # fmt: skip
    text = lesson_corpus("sampling")
    counts: dict[str, int] = {}
    for m in re.finditer(" th(.)", text, flags=re.S):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    total = sum(counts.values())
    p = {c: n / total for c, n in counts.items()}
    show = {" ": "' ' (space)", "\n": "'\\n'"}
    name = {c: show.get(c, repr(c)) for c in counts}
    ranked = sorted(counts, key=lambda c: -counts[c])

    top_k = {c for c in counts if counts[c] >= counts[ranked[4]]}
    mass, top_p = 0.0, set()
    for c in ranked:
        if mass < 0.5:
            top_p.add(c)
        mass += p[c]
    min_p = {c for c in counts if p[c] >= 0.2 * max(p.values())}
    sections = steps(lesson)
    for title, key, kept in (("Top-k", "top-k", top_k), ("Top-p (nucleus)", "top-p", top_p),
                             ("Min-p", "min-p", min_p)):  # fmt: skip
        shown = _kept(sections[title][0].values[key])
        kept_mass = sum(p[c] for c in kept)
        for c in counts:
            assert shown[name[c]][0] == (c in kept), (key, c)
            expected = p[c] / kept_mass if c in kept else 0.0
            assert shown[name[c]][1] == pytest.approx(expected, abs=1e-6), (key, c)
    table = sections["Temperature"][0].values["probabilities by temperature"]
    column = table.columns.index("T = 1.3")
    z = sum(n ** (1 / 1.3) for n in counts.values())
    for row in table.rows:
        c = next(c for c in counts if name[c] == row[0])
        assert row[column] == pytest.approx(counts[c] ** (1 / 1.3) / z, abs=1e-6)


def test_kv_cache_with_tokens_and_context():
    lesson = get_lesson("kv-cache", {"tokens": "100", "context": "1000"})
    published = {  # layers, kv heads, head_dim, bytes per element (config.json of each model)
        "gpt2": (12, 12, 64, 4), "llama-3-8b": (32, 8, 128, 2), "llama-3-70b": (80, 8, 128, 2),
    }  # fmt: skip
    table = steps(lesson)["The trade-off: memory"][0].values["KV cache at the chosen context"]
    for model, tokens, nbytes, gib in table.rows:
        layers, kv_heads, head_dim, size = published[model]
        assert tokens == 1000
        assert nbytes == 2 * layers * kv_heads * head_dim * 1000 * size
        assert gib == round(nbytes / 2**30, 3)
    from llm_internals.explain.lessons.kv_cache import timing_model

    cfg = timing_model().config
    linear = cfg.n_layers * (4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_ff)
    head = 2 * cfg.d_model * cfg.vocab_size

    def flops(tokens: int, keys: int) -> int:
        return tokens * 2 * linear + cfg.n_layers * 4 * tokens * keys * cfg.d_model + head

    # the FLOPs row for n = 100, by the closed-form count
    flop_table = steps(lesson)["The problem: recomputing the past"][0].values
    row = next(r for r in flop_table["FLOPs of the step that sees n tokens"].rows if r[0] == 100)
    assert row[1:3] == [flops(100, 100), flops(1, 100)]


def test_kv_cache_refuses_a_huge_sequence_length_at_once():
    with pytest.raises(LLMInternalsError, match=r"tokens = 100000 is outside \[1, 256\]"):
        get_lesson("kv-cache", {"tokens": "100000"})


def test_paged_attention_with_block_size_8():
    from llm_internals.explain.lessons.paged_attention import SAMPLE_EVERY, workload

    bs = 8
    lesson = get_lesson("paged-attention", {"block_size": str(bs)})
    step = steps(lesson)["Why it is so effective: the measured waste"][0]
    table = step.values[f"sampled every {SAMPLE_EVERY} steps"]
    for t, running, used, blocks, allocated, waste in table.rows:
        # all prompts prefill in step 1; after step t, request i (if o_i > t) holds p_i + t - 1
        alive = [(p, o) for p, o in workload() if o > t]
        expected_blocks = sum(-(-(p + t - 1) // bs) for p, _ in alive)
        assert running == len(alive) and used == sum(p + t - 1 for p, _ in alive)
        assert blocks == expected_blocks and allocated == expected_blocks * bs
        assert waste == pytest.approx(1 - used / allocated)
    assert "block_size 8" in step.text


def test_rope_at_another_position_and_theta():
    position, theta = 37, 500000.0
    values = steps(get_lesson("rope", {"position": str(position), "theta": str(theta)}))[
        "A small numeric example"
    ][0].values
    w = [theta ** (-2 * i / 4) for i in range(2)]
    assert torch.allclose(values["w"], torch.tensor(w))
    angles = [position * f for f in w] * 2  # 'half' layout: each frequency twice
    assert torch.allclose(values["cos"], torch.tensor([math.cos(a) for a in angles]), atol=1e-5)
    q = [1.0, 2.0, 3.0, 4.0]  # the lesson's query, rotated as complex numbers q_i + j q_{i+2}
    z = [complex(q[i], q[i + 2]) * complex(math.cos(angles[i]), math.sin(angles[i]))
         for i in range(2)]  # fmt: skip
    expected = [z[0].real, z[1].real, z[0].imag, z[1].imag]
    assert torch.allclose(values["q'"], torch.tensor(expected), atol=1e-4)


def test_flash_online_softmax_with_blocks_of_2():
    lesson = get_lesson("flash-attention", {"block": "2"})
    section = steps(lesson)["Online softmax: one row, block by block"]
    scores = [0.5, 2.0, -1.0, 3.0, 1.0, 0.0, 2.5, -0.5]
    table = section[0].values["after each block (flash.m, flash.l)"]
    assert len(table.rows) == 4
    for j, (block, shown_scores, m, l_sum) in enumerate(table.rows):
        seen = scores[: 2 * (j + 1)]
        assert block == j and shown_scores == ", ".join(f"{s:g}" for s in scores[2 * j : 2 * j + 2])
        assert m == max(seen)
        assert l_sum == pytest.approx(sum(math.exp(s - max(seen)) for s in seen), rel=1e-12)
    lse = math.log(sum(math.exp(s) for s in scores))
    assert section[1].values["L (flash)"] == pytest.approx(lse, rel=1e-12)
