"""The tour stage "serving" on a tiny model: identical greedy outputs, the figures it hands over
recomputed from its requests (contiguous waste by arithmetic, prefix hits from the block size),
and the paged engine's waste bounded by one partly filled block per sequence."""

from pathlib import Path

import torch
from rich.console import Console

from llm_internals.inference.generate import generate
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.tour import STAGES, TourContext
from llm_internals.tour import serving as stage

TEXT = (
    "Now is the winter of our discontent made glorious summer by this sun of York; and all the "
    "clouds that lour'd upon our house in the deep bosom of the ocean buried.\n"
) * 20


def test_stage_serves_checks_and_hands_over(tmp_path: Path):
    tok = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=2, n_heads=2,
                                  d_ff=32, max_seq_len=64))  # fmt: skip
    console = Console(record=True, width=140)
    ctx = TourContext(console=console, workdir=tmp_path, corpus_source="test")
    ctx.val_text = TEXT
    ctx.artifacts.update(model=model, tokenizer=tok)
    stage.run(ctx)
    out = console.export_text()
    result = ctx.artifacts["serving"]
    requests = result["requests"]
    assert len(requests) == stage.N_PROMPTS
    assert len({len(p) for p, _ in requests}) > 8 and len({m for _, m in requests}) > 8
    assert all(len(p) + m <= 64 for p, m in requests)
    assert result["identical"] and "identical to the contiguous-cache generate: yes (16/16" in out

    # the engine's tokens equal generate's for each request alone (no batching, no padding)
    for (prompt, max_tokens), tokens in zip(requests, result["outputs"], strict=True):
        alone = generate(model, None, prompt, max_new_tokens=max_tokens, eos_token_id=None)
        assert tokens == alone.token_ids and len(tokens) == max_tokens

    width, longest = max(len(p) for p, _ in requests), max(m for _, m in requests)
    allocated = len(requests) * (width + longest)
    wastes = [1 - sum(len(p) + min(t, m) for p, m in requests) / allocated
              for t in range(1, longest + 1)]  # fmt: skip
    assert abs(result["contiguous_waste_mean"] - sum(wastes) / len(wastes)) < 1e-12
    # each running sequence leaves at most block_size - 1 slots of its last block empty
    shortest_stored = min(len(p) for p, _ in requests)
    bound = (stage.BLOCK_SIZE - 1) / (shortest_stored + stage.BLOCK_SIZE - 1)
    assert 0 <= result["paged_waste_peak"] <= bound
    assert result["paged_waste_mean"] < result["contiguous_waste_mean"]

    prompt_len = stage.PREFIX_TOKENS + stage.SUFFIX_TOKENS
    hits = (
        (stage.PREFIX_REQUESTS - 1) * (stage.PREFIX_TOKENS // stage.BLOCK_SIZE) * (stage.BLOCK_SIZE)
    )
    assert result["prefix_queried_tokens"] == stage.PREFIX_REQUESTS * prompt_len
    assert result["prefix_hit_tokens"] == hits
    assert abs(result["prefix_hit_rate"] - hits / (stage.PREFIX_REQUESTS * prompt_len)) < 1e-12
    assert f"{result['prefix_hit_rate']:.1%}" in out
    assert result["paged_tokens_per_s"] > 0 and result["contiguous_tokens_per_s"] > 0
    assert ("serving", "serving") in STAGES
