"""`serve --lora NAME=DIR`: the OpenAI `model` field picks the adapter; /v1/models lists them."""

from __future__ import annotations

import httpx
import pytest

from llm_internals.adapters import LoraSettings, inject_lora, load_adapter, merge_and_unload
from llm_internals.adapters import save_adapter as save
from llm_internals.adapters.multi import attach_adapters
from llm_internals.commands.serve import _lora_flags
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.server import create_app, serve_in_thread
from llm_internals.tokenizer.char import CharTokenizer

from .conftest import VOCAB, load_ours, randomize_adapters

TOKENIZER = CharTokenizer.train("".join(map(chr, range(32, 32 + VOCAB))))  # one char per id


@pytest.fixture(scope="module")
def adapter_dir(llama_dir, tmp_path_factory):
    model = load_ours(llama_dir)
    inject_lora(model, LoraSettings(r=4, alpha=32), "all-linear")
    randomize_adapters(model, 3)
    return save(model, tmp_path_factory.mktemp("sql"))


def _greedy(model, prompt: str) -> str:
    return generate(model.double(), TOKENIZER, prompt, max_new_tokens=5, eos_token_id=None).text


def test_model_field_selects_the_adapter(llama_dir, adapter_dir):
    model = load_ours(llama_dir)
    attach_adapters(model, _lora_flags([f"sql={adapter_dir}"]))
    engine = LLM(model.double(), TOKENIZER, block_size=4, eos_token_id=None)
    merged = load_ours(llama_dir)
    load_adapter(merged, adapter_dir)
    expected = {"base": _greedy(load_ours(llama_dir), "hello"),
                "sql": _greedy(merge_and_unload(merged), "hello")}  # fmt: skip
    assert expected["base"] != expected["sql"]
    with serve_in_thread(create_app(engine, model_name="base")) as url:
        listed = httpx.get(f"{url}/v1/models").json()["data"]
        assert [(m["id"], m.get("parent")) for m in listed] == [("base", None), ("sql", "base")]
        for name, text in expected.items():
            body = {"model": name, "prompt": "hello", "max_tokens": 5, "temperature": 0}
            reply = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()
            assert reply["choices"][0]["text"] == text, reply
        missing = httpx.post(f"{url}/v1/completions", json={**body, "model": "nope"}, timeout=60)
        assert missing.status_code == 404 and "'sql'" in missing.json()["error"]["message"]


def test_lora_flag_errors():
    for bad in (["sql"], ["=dir"], ["a=x", "a=y"]):
        with pytest.raises(LLMInternalsError, match="expected NAME=DIR") as err:
            _lora_flags(bad)
        assert "--lora" in err.value.hint
