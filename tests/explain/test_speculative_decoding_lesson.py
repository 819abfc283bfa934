"""The speculative-decoding lesson's numbers, recomputed independently: the accept decisions from
the shown uniforms and probabilities, the exactness of rejection sampling from the shown p and q
(summed over the two ways a token can come out), greedy tokens from full forwards, weight bytes
from the closed-form GPT-2 parameter count, and the speed formula from the shown c."""

from __future__ import annotations

import ast
import json

import pytest
import torch

from llm_internals.explain.lessons import speculative_decoding as lesson_module
from llm_internals.explain.tiny_models import tiny_tokenizer

# A results file as benchmarks/speculative.py writes it (only the fields the lesson reads).
RESULTS = {
    "quick": False,
    "batch1": [
        {"method": "target alone", "gamma": 0, "tokens_per_s": 40.0, "speedup": 1.0, "c": 0.15},
        {"method": "draft", "gamma": 3, "alpha": 0.8, "tokens_per_forward": 2.9,
         "tokens_per_s": 88.0, "speedup": 2.2},
        {"method": "n-gram", "gamma": 3, "alpha": 0.5, "tokens_per_forward": 1.8,
         "tokens_per_s": 60.0, "speedup": 1.5},
    ],
    "engine": [{"batch": 16, "method": "draft", "gamma": 3, "acceptance_rate": 0.7,
                "tokens_per_forward": 2.5, "tokens_per_s": 300.0, "speedup": 0.9}],
    "hf": [{"method": "assisted g=3", "tokens_per_s": 70.0, "speedup": 1.8}],
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """$LLM_INTERNALS_HOME holding a benchmark results file."""
    path = tmp_path_factory.mktemp("home")
    (path / "speculative").mkdir()
    (path / "speculative" / "results.json").write_text(json.dumps(RESULTS))
    return path


@pytest.fixture(scope="module")
def lesson(home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_INTERNALS_HOME", str(home))
        return {s.title: s.steps for s in lesson_module.build().sections}


def _round(lesson):
    steps = lesson["One real draft/verify round, step by step"]
    tok = tiny_tokenizer()
    rows = steps[0].values["round"].rows
    ids = [tok.encode(ast.literal_eval(row[1]))[0] for row in rows]
    p = steps[1].values["p (target), positions 1..gamma+1"].double()
    q = steps[1].values["q (draft), positions 1..gamma"].double()
    return rows, ids, p, q, steps


def test_accept_decisions_follow_the_rule(lesson):
    rows, _, _, _, steps = _round(lesson)
    n = steps[0].values["accepted n"]
    assert 0 < n < lesson_module.GAMMA  # the round shows both outcomes
    for i, (_, _, q_x, p_x, ratio, r, decision) in enumerate(rows):
        assert ratio == pytest.approx(min(1.0, p_x / q_x), rel=1e-12)
        if i < n:
            assert decision == "accept" and r < p_x / q_x
        elif i == n:
            assert decision == "reject" and r >= p_x / q_x
        else:
            assert decision == "not examined"


def test_recorded_probabilities_are_the_models_distributions(lesson):
    """p_i(x_i) and q_i(x_i) recorded inside generate equal the full distributions the lesson
    computed from separate forwards of both models, at the drafted tokens."""
    rows, ids, p, q, _ = _round(lesson)
    for i, token in enumerate(ids):
        assert rows[i][3] == pytest.approx(float(p[i, token]), abs=1e-5)
        assert rows[i][2] == pytest.approx(float(q[i, token]), abs=1e-5)
    assert torch.allclose(p.sum(-1), torch.ones(len(p), dtype=torch.float64), atol=1e-5)


def test_output_distribution_is_exactly_p(lesson):
    """P(emit x) summed over its two paths (drafted and accepted; rejected and drawn from the
    residual), with the rejection probability as 1 - sum_y q(y) min(1, p(y)/q(y)): equals p, and
    the lesson's beta and residual mass are these numbers."""
    _, _, p, q, _ = _round(lesson)
    table = lesson["The verification step: why the output is exactly p"][0].values
    rows = table["checked on this round's p and q"].rows
    for i, (position, beta, residual_mass, total, max_error) in enumerate(rows):
        accept = q[i] * torch.clamp(p[i] / q[i], max=1.0)
        reject = 1.0 - accept.sum()
        residual = torch.where(p[i] > q[i], p[i] - q[i], torch.zeros_like(p[i]))
        emitted = accept + reject * residual / residual.sum()
        assert position == i + 1
        assert torch.allclose(emitted, p[i], atol=1e-6)
        assert beta == pytest.approx(float(accept.sum()), abs=1e-6)
        assert residual_mass == pytest.approx(float(residual.sum()), abs=1e-6)
        assert total == pytest.approx(1.0, abs=1e-6)
        assert max_error < 1e-6


def test_residual_drawn_at_the_rejection(lesson):
    _, _, p, q, steps = _round(lesson)
    n = steps[0].values["accepted n"]
    recorded = steps[1].values["residual drawn from (recorded, unnormalised)"][0].double()
    expected = (p[n] - q[n]).clamp(min=0)
    assert torch.allclose(recorded / recorded.sum(), expected / expected.sum(), atol=1e-5)


def test_greedy_speculation_is_the_targets_greedy_output(lesson):
    target, draft, tok = lesson_module.lesson_models()
    ids = tok.encode(lesson_module.PROMPT)
    with torch.no_grad():
        for _ in range(lesson_module.NEW_TOKENS):
            ids.append(int(target(torch.tensor([ids]))[0, -1].argmax()))
    step = lesson["The core idea"][1].values
    expected = tok.decode(ids[len(tok.encode(lesson_module.PROMPT)) :])
    assert ast.literal_eval(step["speculative"]) == expected
    assert ast.literal_eval(step["target alone"]) == expected
    # the first round's table: the target argmax after prompt + drafts, by a full forward
    rows = lesson["The core idea"][0].values["first round"].rows
    drafts = [tok.encode(ast.literal_eval(row[1]))[0] for row in rows]
    prompt = tok.encode(lesson_module.PROMPT)
    with torch.no_grad():
        logits = target(torch.tensor([prompt + drafts]))[0, len(prompt) - 1 :]
    argmax = [tok.decode([int(t)]) for t in logits.argmax(-1)]
    n = lesson["The core idea"][0].values["accepted in this round"]
    assert [ast.literal_eval(row[2]) for row in rows] == argmax[: len(rows)]
    assert all(row[1] == row[2] for row in rows[:n]) and rows[n][1] != rows[n][2]


def gpt2_weight_bytes(vocab: int, d: int, layers: int) -> int:
    """float32 bytes of a GPT-2 block stack read per token: tied embedding/head V d; per layer
    q,k,v,o (4 d^2 + 4 d), MLP d -> 4d -> d (8 d^2 + 5 d), two LayerNorms (4 d); final norm 2 d."""
    return 4 * (vocab * d + layers * (12 * d * d + 13 * d) + 2 * d)


def test_bytes_per_token(lesson):
    values = lesson["Why generation is slow"][0].values
    assert values["the lesson's target: weight bytes per token"] == gpt2_weight_bytes(29, 32, 2)
    timing = lesson_module.TIMING_SHAPE
    expected = gpt2_weight_bytes(timing["vocab_size"], timing["d_model"], timing["n_layers"])
    assert values["its weight bytes per token (no position table)"] == expected
    positions = timing["max_seq_len"] * timing["d_model"]
    assert values["a 4 x 384 model (vocab 2048): parameters"] == expected // 4 + positions
    timed = lesson["Why generation is slow"][1].values
    assert timed["time ratio"] == pytest.approx(timed["5 tokens (ms)"] / timed["1 token (ms)"])


def test_real_numbers_come_from_the_results_file(lesson, home):
    step = lesson["Real numbers and speedup"][0]
    assert str(home / "speculative" / "results.json") in step.text
    rows = step.values["batch 1, greedy"].rows
    assert [row[-1] for row in rows] == [r["speedup"] for r in RESULTS["batch1"]]
    assert rows[1][2] == 0.8 and rows[0][2] == "-"
    assert step.values["paged engine, greedy"].rows[0][3] == 0.7
    assert step.values["best batch-1 speedup"] == 2.2
    assert "2.20x (draft, gamma 3)" in lesson["Quick summary"][0].text


def test_trade_off_grid_is_the_formula(lesson):
    values = lesson["Trade-offs"][0].values
    c = RESULTS["batch1"][0]["c"]
    assert values["c = draft step / target step (measured)"] == c
    for alpha, *cells, best in values["predicted speedup E / (gamma c + 1)"].rows:
        expected = [
            (1 - alpha ** (g + 1)) / ((1 - alpha) * (g * c + 1)) for g in lesson_module.GAMMAS
        ]
        assert cells == pytest.approx(expected, rel=1e-12)
        assert best == lesson_module.GAMMAS[expected.index(max(expected))]
    ((method, gamma, alpha, predicted, measured),) = values["measured (draft model)"].rows
    assert predicted == pytest.approx((1 - 0.8**4) / (0.2 * (3 * c + 1)))
    assert measured == 2.2


def test_live_measurement_without_a_results_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_INTERNALS_HOME", str(tmp_path))
    assert lesson_module.load_results() is None
    (tmp_path / "speculative").mkdir()
    (tmp_path / "speculative" / "results.json").write_text(json.dumps({**RESULTS, "quick": True}))
    assert lesson_module.load_results() is None  # a --quick smoke run is not a measurement
    target, draft, tok = lesson_module.lesson_models()
    rows = lesson_module.live_measurement(target, draft, tok)["batch1"]
    base = rows[0]["tokens_per_s"]
    assert [r["method"] for r in rows] == ["target alone", "draft", "n-gram"]
    for row in rows:
        assert row["speedup"] == pytest.approx(row["tokens_per_s"] / base)
    assert rows[0]["c"] > 0 and 1 <= rows[1]["tokens_per_forward"] <= lesson_module.GAMMA + 1
