"""The Sampler's greedy shortcut (argmax without the softmax, for all-greedy batches without
penalties; generate and the engine both go through it) gives the full path's tokens: the Sampler
runs the full path while recording, so both paths are compared."""

from __future__ import annotations

import torch

from llm_internals.inference.generate import generate
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.trace import recording


def test_greedy_shortcut_equals_the_sampler_path():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    model = DecoderLM(config).eval()
    prompts = [[5, 9, 13], [7], [1, 2, 3, 4, 5, 6]]
    fast = generate(model, None, prompts, max_new_tokens=20, eos_token_id=None)
    with recording() as rec:
        full = generate(model, None, prompts, max_new_tokens=20, eos_token_id=None)
    assert len(rec.all("sampling.probs")) == 20  # the Sampler ran at every step
    assert [r.token_ids for r in fast] == [r.token_ids for r in full]
    assert len({tuple(r.token_ids) for r in fast}) == 3  # the rows differ: not a trivial check
