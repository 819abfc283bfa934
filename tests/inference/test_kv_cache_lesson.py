"""The kv-cache lesson's numbers, recomputed independently: Q/K/V and attention by hand from the
weights (embedding, RMSNorm, projections, RoPE), greedy tokens from full forwards, FLOPs from the
closed-form count, KV bytes from the published configs."""

from __future__ import annotations

import math

import pytest
import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import kv_cache as lesson_module
from llm_internals.tokenizer.char import CharTokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second torch thread only adds waiting (badly so on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


@pytest.fixture(scope="module")
def tiny():
    tok = CharTokenizer(lesson_module.ALPHABET)
    return lesson_module.tiny_model(tok.vocab_size), tok


def layer0_qkv(model, ids: list[int]):
    """Layer 0's q, k, v for head 0 by hand: embedding -> RMSNorm -> x W^T -> RoPE (half)."""
    block = model.blocks[0]
    x = model.tok_emb.weight[torch.tensor(ids)]
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + model.config.norm_eps)
    x = x * block.norm1.weight
    hd = model.config.head_dim
    q = (x @ block.attn.q_proj.weight.T)[:, :hd]
    k = (x @ block.attn.k_proj.weight.T)[:, :hd]
    v = (x @ block.attn.v_proj.weight.T)[:, :hd]
    inv_freq = 1.0 / (model.config.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.arange(len(ids)).float()[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

    def rotate(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[:, half:], t[:, :half]], -1) * sin

    return rotate(q), rotate(k), v


def test_the_loop_is_greedy_decoding_by_full_forwards(lesson, tiny):
    model, tok = tiny
    ids = tok.encode(lesson_module.PROMPT)
    expected = []
    with torch.no_grad():
        for _ in range(lesson_module.NEW_TOKENS):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            expected.append(nxt)
            ids = ids + [nxt]
    table = lesson["How an LLM generates text"][1].values["steps"]
    assert isinstance(table, Table)
    assert [row[3] for row in table.rows] == expected
    assert [row[2] for row in table.rows] == [5 + i for i in range(len(expected))]
    fed = [repr(lesson_module.PROMPT)] + [repr(tok.decode([t])) for t in expected[:-1]]
    assert [row[1] for row in table.rows] == fed
    assert lesson["How an LLM generates text"][1].values["result"] == repr(
        lesson_module.PROMPT + tok.decode(expected)
    )


def test_qkv_match_a_hand_computation(lesson, tiny):
    model, tok = tiny
    with torch.no_grad():
        q, k, v = layer0_qkv(model, tok.encode(lesson_module.PROMPT))
    shown = lesson["Inside the model: Q, K and V for every token"][1].values
    for name, expected in (("Q (head 0)", q), ("K (head 0)", k), ("V (head 0)", v)):
        assert torch.allclose(shown[name], expected, atol=1e-6)


def test_the_cache_step_matches_a_hand_computation(lesson, tiny):
    model, tok = tiny
    ids = tok.encode(lesson_module.PROMPT + "o")
    with torch.no_grad():
        _, k, _ = layer0_qkv(model, ids)
    steps = lesson["The solution: keep K and V"]
    assert torch.allclose(steps[1].values["all stored keys"], k, atol=1e-6)
    assert torch.allclose(steps[1].values["new key (computed this step)"], k[-1:], atol=1e-6)
    assert 0 <= steps[2].values["max |cached - recomputed| over the logits"] < 1e-6


def test_the_decode_step_attention_weights(lesson, tiny):
    model, tok = tiny
    with torch.no_grad():
        q, k, _ = layer0_qkv(model, tok.encode(lesson_module.PROMPT))
    weights = torch.softmax(q[-1:] @ k.T / math.sqrt(q.shape[-1]), dim=-1)
    shown = lesson["Why K and V, but not Q"][1].values
    assert torch.allclose(shown["attention weights of the new token (head 0)"], weights, atol=1e-6)
    assert shown["q shape (batch, heads, queries, head_dim)"] == "(1, 2, 1, 4)"
    assert shown["k shape (batch, kv_heads, keys, head_dim)"] == "(1, 2, 5, 4)"


def test_flops_table_matches_the_closed_form_count(lesson):
    c = lesson_module.timing_model().config
    linear_params = c.n_layers * (4 * c.d_model**2 + 2 * c.d_model * c.d_ff)
    head = 2 * c.d_model * c.vocab_size

    def flops(tokens: int, keys: int) -> int:
        return tokens * 2 * linear_params + c.n_layers * 4 * tokens * keys * c.d_model + head

    steps = lesson["The problem: recomputing the past"]
    table = steps[0].values["FLOPs of the step that sees n tokens"]
    assert [row[0] for row in table.rows] == list(lesson_module.FLOP_STEPS)
    for n, without, with_cache, recomputed, share in table.rows:
        assert without == flops(n, n) and with_cache == flops(1, n)
        assert recomputed == without - with_cache
        assert share == f"{(without - with_cache) / without:.0%}"
    sums = steps[1].values
    assert sums["with cache"] == sum(flops(1, n) for n in lesson_module.FLOP_STEPS)


def test_speed_rows_are_consistent_measurements(lesson):
    table = lesson["How much faster"][0].values["seconds"]
    assert [row[0] for row in table.rows] == list(lesson_module.TIMED_TOKENS)
    for _, cached, uncached, speedup, same in table.rows:
        assert cached > 0 and uncached > 0 and same == "yes"
        # Seconds are shown to 3 decimals and the speedup to 1, both from the unrounded times:
        # the shown speedup must fit some pair of times that round to the shown seconds (on a
        # fast machine, 0.047 s and 0.069 s can stand for a true ratio of 1.44, shown as 1.4x).
        ratio = float(speedup.rstrip("x"))
        lowest = (uncached - 0.0005) / (cached + 0.0005)
        highest = (uncached + 0.0005) / (cached - 0.0005)
        assert lowest <= ratio + 0.05 + 1e-9 and highest >= ratio - 0.05 - 1e-9


def test_memory_table_from_published_configs(lesson):
    published = {  # layers, heads, kv heads, head_dim, bytes per element (config.json values)
        "gpt2": (12, 12, 12, 768 // 12, 4),
        "llama-3-8b": (32, 32, 8, 4096 // 32, 2),
        "llama-3-70b": (80, 64, 8, 8192 // 64, 2),
    }
    steps = lesson["The trade-off: memory"]
    table = steps[0].values["KV cache per sequence"]
    for row in table.rows:
        layers, heads, kv, hd, nbytes = published[row[0]]
        per_token = 2 * layers * kv * hd * nbytes
        assert row[1:4] == [layers, f"{kv}/{heads}", hd] and row[5] == per_token
        assert row[6] == round(per_token * 4096 / 2**30, 3)
        assert row[7] == round(per_token * 131072 / 2**30, 3)
    no_gqa = 2 * 80 * 64 * 128 * 2 * 131072 / 2**30
    assert steps[1].values["Llama-3-70B at 128k tokens, 64 KV heads (GiB)"] == round(no_gqa, 3)
