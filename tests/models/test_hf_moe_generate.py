"""MoE families generate and serve: greedy `generate` == HF `generate` (one prompt and a
left-padded batch whose rows stop at different steps), and the paged engine's greedy tokens ==
our `generate`, for Mixtral, Qwen2-MoE and Qwen3-MoE checkpoints loaded from HF files."""

from __future__ import annotations

import pytest
import torch

from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.models import load_pretrained

from .conftest import hf_greedy
from .test_hf_moe_parity import MOE_FAMILIES, make_hf_moe

EOS = 3
PROMPTS = [[5, 17, 99, 42, 8, 77, 61], [12, 4], [100, 33, 2, 90]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for family in MOE_FAMILIES:
        hf = make_hf_moe(family, seed=7)
        path = tmp_path_factory.mktemp(family)
        hf.save_pretrained(path)
        out[family] = (hf, path)
    return out


def with_eos(result, eos):
    return result.token_ids + ([eos] if result.finish_reason == "eos" else [])


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_greedy_generate_equals_hf_generate(saved, family):
    hf, path = saved[family]
    ours = load_pretrained(path)
    new = 12
    single = generate(ours, None, PROMPTS[0], max_new_tokens=new, eos_token_id=EOS)
    assert with_eos(single, EOS) == hf_greedy(hf, PROMPTS[:1], new, EOS)[0]
    # an eos that row 1 emits early, so the rows finish at different steps
    free = generate(ours, None, PROMPTS, max_new_tokens=new, eos_token_id=None)
    eos = free[1].token_ids[3]
    batch = generate(ours, None, PROMPTS, max_new_tokens=new, eos_token_id=eos)
    assert batch[1].finish_reason == "eos"
    assert [with_eos(r, eos) for r in batch] == hf_greedy(hf, PROMPTS, new, eos)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_engine_serves_the_family_as_generate_does(saved, family):
    """float64, so that no routing or argmax tie can flip between the engine's shared batches
    and generate's one-request runs."""
    _, path = saved[family]
    model = load_pretrained(path, dtype=torch.float64)
    lengths = (9, 4, 12, 6)
    params = [SamplingParams(temperature=0.0, max_tokens=m) for m in lengths]
    prompts = [*PROMPTS, [7, 7, 8, 50, 1]]
    llm = LLM(model, block_size=4, num_blocks=40, max_num_seqs=3, max_num_batched_tokens=10)
    outputs = llm.generate(prompts, params)
    for prompt, m, out in zip(prompts, lengths, outputs, strict=True):
        alone = generate(model, None, prompt, max_new_tokens=m, eos_token_id=None)
        assert out.token_ids == alone.token_ids and len(out.token_ids) == m
