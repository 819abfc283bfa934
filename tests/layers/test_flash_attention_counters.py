"""What the tiled loops report: block pairs skipped by the causal mask (against block slices of
causal_mask), bytes read and written per the rules in flash_counters.py (recounted here from the
shapes), the trace records a lesson reads (running max and sum against the materialised scores),
and one clear error per bad argument before any work."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.flash_attention import (
    FlashCounters,
    flash_attention,
    flash_attention_forward,
)
from llm_internals.layers.masks import causal_mask
from llm_internals.trace import recording

from .flash_reference import random_qkv


def _blocks(n, size):
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _visible_pairs(n_q, n_k, block_q, block_k):
    """(i, j) -> True when some query of block i may see some key of block j (causal)."""
    allowed = causal_mask(n_q, n_k)
    return {
        (i, j): bool(allowed[i0:i1, j0:j1].any())
        for i, (i0, i1) in enumerate(_blocks(n_q, block_q))
        for j, (j0, j1) in enumerate(_blocks(n_k, block_k))
    }


@settings(max_examples=40, deadline=None)
@given(
    n_q=st.integers(1, 40),
    n_k=st.integers(1, 40),
    block_q=st.integers(1, 12),
    block_k=st.integers(1, 12),
    loop_order=st.sampled_from(["fa2", "fa1"]),
)
def test_causal_skips_exactly_the_blocks_above_the_diagonal(n_q, n_k, block_q, block_k, loop_order):
    q, k, v = random_qkv((1, 1, n_q, 2), (1, 1, n_k, 2))
    counters = FlashCounters()
    with recording() as rec:
        flash_attention(
            q,
            k,
            v,
            causal=True,
            block_q=block_q,
            block_k=block_k,
            loop_order=loop_order,
            counters=counters,
        ).sum().backward()
    visible = _visible_pairs(n_q, n_k, block_q, block_k)
    hidden = sum(not seen for seen in visible.values())
    assert counters.forward.blocks_skipped == counters.backward.blocks_skipped == hidden
    assert (
        counters.forward.blocks_computed
        == counters.backward.blocks_computed
        == len(visible) - hidden
    )
    pairs = rec.all("flash.pair")
    assert {(i, j): state == "computed" for i, j, state in pairs} == visible
    order = [(i, j) for i, j, _ in pairs]  # fa2: query blocks outside; fa1: key blocks outside
    assert order == sorted(
        order, key=(lambda p: p) if loop_order == "fa2" else (lambda p: (p[1], p[0]))
    )
    assert sorted(rec.all("flash.backward_pair")) == sorted(
        p for p, seen in visible.items() if seen
    )


def test_fa2_byte_counts_follow_the_documented_rules():
    """GQA (8 query heads on 2 K/V heads), fp32: Q read once; K and V once per query block
    (a K/V block serves its whole group); O and L written once."""
    b, h, h_kv, n, d = 2, 8, 2, 50, 16
    q, k, v = random_qkv((b, h, n, d), (b, h_kv, n, d), dtype=torch.float32)
    counters = FlashCounters()
    flash_attention(q, k, v, block_q=16, block_k=8, counters=counters).sum().backward()
    fwd, bwd = counters.forward, counters.backward
    q_blocks, k_blocks = math.ceil(n / 16), math.ceil(n / 8)
    assert fwd.blocks_computed == q_blocks * k_blocks and fwd.blocks_skipped == 0
    assert fwd.read == {
        "Q": 4 * q.numel(),
        "K": 4 * q_blocks * k.numel(),
        "V": 4 * q_blocks * v.numel(),
    }
    assert fwd.written == {"O": 4 * q.numel(), "L": 4 * b * h * n}
    # backward, K/V outside: K, V read and dK, dV written once; Q, dO, L, D read and dQ read and
    # written once per key block; O and dO read and D written once; dQ zeroed once.
    per_row = 4 * b * h * n
    assert bwd.read == {
        "K": 4 * k.numel(),
        "V": 4 * v.numel(),
        "O": 4 * q.numel(),
        "Q": 4 * k_blocks * q.numel(),
        "dO": 4 * (k_blocks + 1) * q.numel(),
        "L": k_blocks * per_row,
        "D": k_blocks * per_row,
        "dQ": 4 * k_blocks * q.numel(),
    }
    assert bwd.written == {
        "dK": 4 * k.numel(),
        "dV": 4 * v.numel(),
        "D": per_row,
        "dQ": 4 * (k_blocks + 1) * q.numel(),
    }
    assert counters.bytes_read == fwd.bytes_read + bwd.bytes_read


def test_fa1_and_causal_byte_counts():
    """FA1, causal, bf16 (2-byte tensors, 4-byte statistics): K and V read once; at every
    computed pair Q, O, m, l read and O, m, l written; the counts follow the visible pairs."""
    n_q, n_k, d, bq, bk = 20, 27, 4, 6, 5
    q, k, v = random_qkv((3, n_q, d), (3, n_k, d), dtype=torch.bfloat16)
    counters = FlashCounters()
    flash_attention_forward(
        q, k, v, causal=True, block_q=bq, block_k=bk, loop_order="fa1", counters=counters
    )
    visible = _visible_pairs(n_q, n_k, bq, bk)
    q_rows = sum(
        i1 - i0 for (i, _), seen in visible.items() if seen for i0, i1 in [_blocks(n_q, bq)[i]]
    )
    fwd = counters.forward
    assert fwd.read["K"] == 2 * k.numel() and fwd.read["V"] == 2 * v.numel()
    assert fwd.read["Q"] == fwd.read["O"] == 2 * 3 * q_rows * d
    assert fwd.read["m"] == fwd.read["l"] == 4 * 3 * (q_rows + n_q)  # + the final L = m + log l
    assert fwd.written["O"] == 2 * 3 * (q_rows + n_q) * d  # + initialisation
    assert fwd.written["m"] == fwd.written["l"] == 4 * 3 * (q_rows + n_q)
    assert fwd.written["L"] == 4 * 3 * n_q


def test_records_show_the_online_softmax_of_each_row():
    """One query block of 8 rows against key blocks of 3: after key block j, m and l are the max
    and the sum of exp(s - m) over the keys seen so far (from the materialised scores)."""
    q, k, v = random_qkv((1, 2, 8, 4), (1, 1, 8, 4), seed=7)  # GQA: 2 query heads, 1 K/V head
    with recording() as rec:
        out, lse = flash_attention_forward(q, k, v, causal=True, block_q=8, block_k=3)
    scores = (q @ k.transpose(-1, -2)).detach() / 2.0  # scale 1/sqrt(4)
    scores = scores.masked_fill(~causal_mask(8, 8), float("-inf"))
    ms, ls = rec.all("flash.m"), rec.all("flash.l")
    assert rec.all("flash.pair") == [(0, 0, "computed"), (0, 1, "computed"), (0, 2, "computed")]
    for j, (m, l_sum) in enumerate(zip(ms, ls, strict=True)):
        seen = scores[..., : 3 * (j + 1)]
        m_ref = seen.amax(dim=-1)
        assert m.shape == (1, 2, 8)
        assert torch.allclose(m, m_ref, atol=1e-12, rtol=0)
        assert torch.allclose(l_sum, torch.exp(seen - m_ref[..., None]).sum(-1), atol=1e-12, rtol=0)
    assert torch.allclose(ms[-1] + torch.log(ls[-1]), lse, atol=1e-12, rtol=0)
    assert torch.equal(rec.get("flash.lse"), lse) and torch.equal(rec.get("flash.output"), out)


def _call(**overrides):
    args = dict(
        q=torch.zeros(2, 4, 5, 8),
        k=torch.zeros(2, 2, 6, 8),
        v=torch.zeros(2, 2, 6, 8),
    )
    args.update(overrides)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return flash_attention(q, k, v, **args)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"q": torch.zeros(5)}, ["q", "(5,)"]),
        (
            {"k": torch.zeros(2, 6, 8), "v": torch.zeros(2, 6, 8)},
            ["number of dims", "q (2, 4, 5, 8)", "k (2, 6, 8)"],
        ),
        ({"k": torch.zeros(2, 2, 6, 7)}, ["head_dim", "q (2, 4, 5, 8)", "k (2, 2, 6, 7)"]),
        ({"v": torch.zeros(2, 2, 7, 8)}, ["k and v", "k (2, 2, 6, 8)", "v (2, 2, 7, 8)"]),
        (
            {"k": torch.zeros(2, 3, 6, 8), "v": torch.zeros(2, 3, 6, 8)},
            ["heads", "q (2, 4, 5, 8)", "k (2, 3, 6, 8)"],
        ),
        (
            {"k": torch.zeros(3, 2, 6, 8), "v": torch.zeros(3, 2, 6, 8)},
            ["leading dims", "q (2, 4, 5, 8)", "k (3, 2, 6, 8)"],
        ),
        ({"v": torch.zeros(2, 2, 6, 8, dtype=torch.float64)}, ["dtypes", "torch.float64"]),
        ({"block_q": 0}, ["block_q", "0"]),
        ({"block_k": 2.5}, ["block_k", "2.5"]),
        ({"loop_order": "fa3"}, ["loop_order", "fa3"]),
        ({"mask": torch.ones(2, 4, 5, 5, dtype=torch.bool)}, ["mask (2, 4, 5, 5)", "(2, 4, 5, 6)"]),
        ({"mask": torch.ones(5, 6)}, ["mask", "boolean"]),
    ],
)
def test_bad_input_is_one_clear_error_naming_the_argument(overrides, words):
    with pytest.raises(LLMInternalsError) as info:
        _call(**overrides)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_errors_come_before_any_work():
    counters = FlashCounters()
    with pytest.raises(LLMInternalsError), recording() as rec:
        _call(block_q=-1, counters=counters)
    assert counters.forward.blocks_computed == 0 and rec.records == []
