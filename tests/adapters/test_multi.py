"""Multi-LoRA: one forward whose token rows use different adapters equals each row run alone
through the base with its adapter merged."""

from __future__ import annotations

import pytest
import torch

from llm_internals.adapters import LoraSettings, inject_lora, load_adapter, merge_and_unload
from llm_internals.adapters import save_adapter as save
from llm_internals.adapters.multi import attach_adapters
from llm_internals.errors import LLMInternalsError

from .conftest import IDS, load_ours, randomize_adapters


@pytest.fixture(scope="module")
def adapter_dirs(llama_dir, tmp_path_factory):
    dirs = {}
    for seed, (name, targets, r) in enumerate([("a", "q,v", 4), ("b", "all-linear", 2)], 1):
        model = load_ours(llama_dir)
        inject_lora(model, LoraSettings(r=r, alpha=8, use_rslora=seed == 2), targets)
        randomize_adapters(model, seed)
        dirs[name] = save(model, tmp_path_factory.mktemp(name))
    return dirs


def _merged(llama_dir, directory):
    model = load_ours(llama_dir)
    if directory is not None:
        load_adapter(model, directory)
        merge_and_unload(model)
    return model


def test_mixed_rows_equal_each_row_with_its_adapter_merged(llama_dir, adapter_dirs):
    model = load_ours(llama_dir)
    multi = attach_adapters(model, adapter_dirs)
    ids = torch.cat([IDS, IDS[:1]])  # three sequences: adapters a, none, b
    names = ["a", None, "b"]
    rows = torch.tensor([multi.adapter_id(n) for n in names]).repeat_interleave(ids.shape[1])
    with torch.no_grad(), multi.rows(rows):
        mixed = model(ids)
    for i, name in enumerate(names):
        alone = _merged(llama_dir, None if name is None else adapter_dirs[name])
        with torch.no_grad():
            torch.testing.assert_close(mixed[i], alone(ids[i : i + 1])[0], rtol=0, atol=1e-5)


def test_wrong_row_count_and_unknown_adapter(llama_dir, adapter_dirs):
    model = load_ours(llama_dir)
    multi = attach_adapters(model, adapter_dirs)
    with (
        pytest.raises(ValueError, match="token rows"),
        multi.rows(torch.zeros(3, dtype=torch.long)),
    ):
        model(IDS)
    with pytest.raises(LLMInternalsError, match="'c' is not loaded") as err:
        multi.adapter_id("c")
    assert "--lora" in err.value.hint
    with torch.no_grad():  # outside rows(): the base alone
        torch.testing.assert_close(model(IDS), load_ours(llama_dir)(IDS), rtol=0, atol=0)
