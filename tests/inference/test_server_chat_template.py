"""Chat templates: a checkpoint's Jinja template renders exactly as HF transformers'
`apply_chat_template` does (the reference), and the live server encodes the rendered special
tokens as special ids; without a template the plain fallback is used."""

from __future__ import annotations

import json

import openai
import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.server import create_app, load_chat_template, serve_in_thread
from llm_internals.inference.server.chat_template import JinjaChatTemplate, SimpleChatTemplate
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

TEXT = "Is this a dagger which I see before me, the handle toward my hand? " * 8
EOT = "<|endoftext|>"
# ChatML-like, with the features real templates use: a loop, conditions, a namespace-free
# system prompt default, trim, raise_exception and the special tokens from the config.
TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ bos_token }}system\nBe brief.{{ eos_token }}\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{{ bos_token }}{{ message['role'] }}\n{{ message['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token }}assistant\n{% endif %}"
)
CHATS = [
    [{"role": "user", "content": "  Is this a dagger? "}],
    [
        {"role": "system", "content": "You are Macbeth."},
        {"role": "user", "content": "Is this a dagger?"},
        {"role": "assistant", "content": "Which I see before me."},
        {"role": "user", "content": "The handle toward my hand?"},
    ],
]


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory):
    """Our tokenizer exported as tokenizer.json, saved by transformers with a chat template."""
    tokenizer = train_bpe(TEXT, 300)
    directory = tmp_path_factory.mktemp("chat")
    tokenizer.to_hf(directory / "tokenizer.json")
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), chat_template=TEMPLATE,
        bos_token=EOT, eos_token=EOT,
    )  # fmt: skip
    hf.save_pretrained(directory)
    return directory, tokenizer, hf


@pytest.mark.parametrize("chat", CHATS)
def test_jinja_template_renders_like_transformers(hf_tokenizer_dir, chat):
    directory, _, hf = hf_tokenizer_dir
    template = load_chat_template(directory)
    assert isinstance(template, JinjaChatTemplate)
    expected = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert template.render(chat) == expected


def test_template_in_tokenizer_config_and_errors(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": TEMPLATE, "bos_token": {"content": "<s>"}, "eos_token": "</s>"}
        )
    )
    rendered = load_chat_template(tmp_path).render(CHATS[0])
    assert rendered.startswith("<s>system\nBe brief.</s>\n<s>user\nIs this a dagger?</s>")
    with pytest.raises(LLMInternalsError, match="unknown role robot"):
        load_chat_template(tmp_path).render([{"role": "robot", "content": "x"}])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% if %}"}))
    with pytest.raises(LLMInternalsError, match="chat_template is not a valid Jinja template"):
        load_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(LLMInternalsError, match="tokenizer_config.json: not readable JSON"):
        load_chat_template(tmp_path)
    assert isinstance(load_chat_template(tmp_path / "elsewhere"), SimpleChatTemplate)


def test_server_uses_the_checkpoint_template(hf_tokenizer_dir):
    directory, tokenizer, hf = hf_tokenizer_dir
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         max_seq_len=128)  # fmt: skip
    model = DecoderLM(config).double().eval()
    engine = LLM(model, tokenizer, block_size=8, num_blocks=64, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    app = create_app(engine, model_name="chat", chat_template=load_chat_template(directory))
    prompt = hf.apply_chat_template(CHATS[1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, allowed_special="all")
    assert (
        prompt_ids.count(tokenizer.special_tokens[EOT]) == 9
    )  # 2 per message, 1 to open the reply
    expected = generate(model, tokenizer, prompt_ids, max_new_tokens=10)
    with (
        serve_in_thread(app) as url,
        openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client,
    ):
        result = client.chat.completions.create(
            model="chat", messages=CHATS[1], max_tokens=10, temperature=0
        )
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert result.choices[0].message.content == expected.text
