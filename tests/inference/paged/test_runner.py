"""The model runner's packed batch: slot mapping, positions and decode grouping, recomputed
from the block tables by hand; logits of a mixed prefill + decode step equal a plain forward."""

from __future__ import annotations

import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.paged.model_runner import GROUP_OVERHEAD_BLOCKS, group_by_length
from llm_internals.inference.params import SamplingParams
from llm_internals.layers.rope import apply_rope
from llm_internals.trace import recording


def test_group_by_length_minimizes_padded_work():
    def cost(blocks, runs):
        return sum((e - s) * blocks[e - 1] + GROUP_OVERHEAD_BLOCKS for s, e in runs)

    for blocks in ([1], [2, 3, 40, 41], [5] * 10, [1, 2, 4, 8, 16, 32, 64], [1, 60, 61, 62, 63]):
        runs = group_by_length(blocks)
        assert runs[0][0] == 0 and runs[-1][1] == len(blocks)
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:], strict=False))
        # brute force over every split of the sorted list
        best = min(
            cost(blocks, split)
            for mask in range(2 ** (len(blocks) - 1))
            for split in [_split(len(blocks), mask)]
        )
        assert cost(blocks, runs) == best
    assert group_by_length([2, 3, 40, 41]) == [(0, 2), (2, 4)]


def _split(n, mask):
    cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
    return list(zip(cuts, cuts[1:], strict=False))


def test_packed_step_records_slots_and_matches_a_plain_forward(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=30, max_num_seqs=4, max_num_batched_tokens=12)
    greedy = SamplingParams(temperature=0.0, max_tokens=5)
    llm.add_request("a", [3, 1, 4, 1, 5, 9], greedy)
    llm.step()  # a: prefilled, first token sampled
    llm.add_request("b", list(range(30, 40)), greedy)  # 10 tokens: a chunk of 11 - 1 = 10 fits
    a = llm.requests["a"][0]
    before = {"a": (a.num_computed_tokens, list(a.token_ids))}
    with recording() as rec:
        llm.step()
    b = llm.requests["b"][0]
    tables = {"a": a.block_table, "b": b.block_table}
    # packed row: a's decode token, then b's 10 prompt tokens
    expected_positions = [before["a"][0]] + list(range(10))
    assert rec.get("paged.positions").tolist() == expected_positions
    assert rec.get("paged.input_ids").tolist() == [before["a"][1][-1]] + list(range(30, 40))
    owners = ["a"] + ["b"] * 10
    expected_slots = [tables[o][p // 4] * 4 + p % 4 for o, p in zip(owners, expected_positions,
                                                                   strict=True)]  # fmt: skip
    assert rec.get("paged.slot_mapping").tolist() == expected_slots
    assert rec.get("paged.decode_block_ids").tolist() == [tables["a"][:2]]
    # the K/V written to the pool equal those of a plain forward over each whole sequence
    layer0 = tiny_model.blocks[0].attn
    for seq in (a, b):
        ids = torch.tensor(seq.token_ids[: seq.num_computed_tokens])[None]
        with torch.no_grad():
            x = tiny_model.blocks[0].norm1(tiny_model.tok_emb(ids))
            k = layer0.k_proj(x).view(1, -1, layer0.n_kv_heads, layer0.head_dim).transpose(1, 2)
            cos, sin = tiny_model.rope(torch.arange(ids.shape[1])[None], dtype=x.dtype)
            k = apply_rope(layer0.k_norm(k) if layer0.k_norm else k, cos, sin, layer0.rope_layout)
        pool = llm.cache.keys[0]  # (n_kv, blocks, block_size, head_dim)
        positions = torch.arange(seq.num_computed_tokens)
        blocks = torch.tensor(seq.block_table)[positions // 4]
        stored = pool[:, blocks, positions % 4]  # (n_kv, tokens, head_dim)
        torch.testing.assert_close(stored, k[0], rtol=0, atol=1e-12)


def test_recorded_decode_attention_equals_the_fast_path(model_factory):
    """Decodes run matmul + softmax + pooled weighted sum; under a recorder they run the
    library's written-out attention on gathered K and V instead. Same logits."""
    prompts = [[5, 9, 2], list(range(1, 20)), [7] * 9, list(range(30, 36))]

    def decode_logits(model, recorded: bool) -> torch.Tensor:
        llm = LLM(model, block_size=4, num_blocks=40, max_num_seqs=4, max_num_batched_tokens=64)
        for i, prompt in enumerate(prompts):
            llm.add_request(str(i), prompt, SamplingParams(temperature=0.0, max_tokens=4))
        llm.step()  # prefill
        batch = llm.scheduler.schedule()
        assert batch.num_new_tokens == [1, 1, 1, 1]
        if not recorded:
            return llm.runner.execute(batch)[1]
        with recording() as rec:
            logits = llm.runner.execute(batch)[1]
        assert len(rec.all("paged.decode_keys")) == model.config.n_layers  # one group
        if model.config.attn_impl == "scratch":  # the written-out steps were taken
            assert len(rec.all("weights")) == model.config.n_layers
        return logits

    for attn_impl in ("scratch", "sdpa"):
        model = model_factory(seed=4, attn_impl=attn_impl)
        fast, recorded = decode_logits(model, False), decode_logits(model, True)
        torch.testing.assert_close(fast, recorded, rtol=0, atol=1e-12)


def test_gather_works_outside_inference_mode_after_a_step_inside_it():
    """The gather buffer is first made during an engine step (inference mode); a later gather
    from ordinary code (a lesson, a debugger) must still work and return the stored keys."""
    from llm_internals.inference.paged.paged_cache import PagedKVCache

    cache = PagedKVCache(n_layers=1, num_blocks=4, block_size=2, n_kv_heads=1, head_dim=3)
    k = torch.arange(6.0).view(1, 2, 3)
    with torch.inference_mode():
        cache.write(0, torch.tensor([2, 3]), k, -k)
        cache.gather(0, torch.tensor([[1]]))
    keys, values = cache.gather(0, torch.tensor([[1]]))
    assert torch.equal(keys[0, 0], k[0])
    assert torch.equal(values[0, 0], -k[0])
