"""Multi-LoRA serving: the paged engine runs requests with different adapters in one batch
(prefill chunks and decodes mixed); each request's greedy tokens equal `generate` on the base
with that request's adapter merged. float64, so argmax ties cannot flip between batchings."""

from __future__ import annotations

import pytest

from llm_internals.adapters import LoraSettings, inject_lora, load_adapter, merge_and_unload
from llm_internals.adapters import save_adapter as save
from llm_internals.adapters.multi import attach_adapters
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams

from .conftest import load_ours, randomize_adapters

# the last prompt repeats the third with another adapter: a prefix-cache hit would reuse K/V
# computed with adapter b (prefix caching is off for a model with adapters)
PROMPTS = [[1, 5, 9, 17, 33], list(range(2, 14)), list(range(40, 60)), [7, 3, 7, 3, 7, 3, 7],
           list(range(40, 60))]  # fmt: skip
ADAPTERS = ["a", None, "b", "a", None]


@pytest.fixture(scope="module")
def adapter_dirs(llama_dir, tmp_path_factory):
    dirs = {}
    for seed, (name, targets) in enumerate([("a", "q,k,v,o"), ("b", "all-linear")], 1):
        model = load_ours(llama_dir)
        inject_lora(model, LoraSettings(r=4, alpha=8), targets)
        randomize_adapters(model, seed)
        for param in model.parameters():  # large enough to change greedy choices
            if param.requires_grad:
                param.data.mul_(4)
        dirs[name] = save(model, tmp_path_factory.mktemp(name))
    return dirs


def _alone(llama_dir, directory, prompt) -> list[int]:
    model = load_ours(llama_dir)
    if directory is not None:
        load_adapter(model, directory)
        merge_and_unload(model)
    return generate(model.double(), None, prompt, max_new_tokens=6, eos_token_id=None).token_ids


def test_mixed_adapters_in_one_batch_equal_each_request_alone(llama_dir, adapter_dirs):
    model = load_ours(llama_dir)
    attach_adapters(model, adapter_dirs)
    llm = LLM(model.double(), None, block_size=4, max_num_seqs=4, max_num_batched_tokens=16,
              eos_token_id=None)  # fmt: skip
    params = [SamplingParams(temperature=0, max_tokens=6, adapter=a) for a in ADAPTERS]
    outputs = llm.generate(PROMPTS, params)
    expected = [_alone(llama_dir, None if a is None else adapter_dirs[a], p)
                for a, p in zip(ADAPTERS, PROMPTS, strict=True)]  # fmt: skip
    assert [o.token_ids for o in outputs] == expected
    assert expected[0] != _alone(llama_dir, None, PROMPTS[0])  # the adapters do change tokens
    with pytest.raises(LLMInternalsError, match="'c' is not loaded"):
        llm.generate([PROMPTS[0]], SamplingParams(max_tokens=2, adapter="c"))


def test_an_adapter_request_to_a_model_without_adapters_is_refused(llama_dir):
    llm = LLM(load_ours(llama_dir), None, block_size=4, eos_token_id=None)
    with pytest.raises(LLMInternalsError, match="serves no adapters") as err:
        llm.generate([PROMPTS[0]], SamplingParams(max_tokens=2, adapter="a"))
    assert "--lora" in err.value.hint
