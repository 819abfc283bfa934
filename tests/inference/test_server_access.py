"""Who may talk to the server: an optional API key (Bearer, as vLLM's --api-key; /health stays
open), a Host-header check (DNS rebinding, servers bound beyond loopback), and no API docs
unless asked for (and never a page that loads a CDN)."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.server import create_app, serve_in_thread
from llm_internals.inference.server.guards import GuardSettings
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

MODEL = "tiny-access"
KEY = "sk-test-0123456789"
TEXT = "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day. " * 10


@pytest.fixture(scope="module")
def engine_parts():
    tokenizer = train_bpe(TEXT, 280)
    torch.manual_seed(6)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, max_seq_len=64)  # fmt: skip
    return DecoderLM(config), tokenizer


def make_app(engine_parts, **kwargs):
    model, tokenizer = engine_parts
    engine = LLM(model, tokenizer, block_size=8, num_blocks=32, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    return create_app(engine, model_name=MODEL, **kwargs)


def test_api_key_is_required_everywhere_but_health(engine_parts):
    app = make_app(engine_parts, guards=GuardSettings(api_key=KEY))
    with serve_in_thread(app) as url:
        assert httpx.get(url + "/health").status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"),
                             ("POST", "/v1/completions"), ("GET", "/v1/nothing")]:  # fmt: skip
            for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": KEY},
                            {"authorization": f"Basic {KEY}"}]:  # fmt: skip
                response = httpx.request(method, url + path, headers=headers,
                                         json={"model": MODEL, "prompt": "x"})  # fmt: skip
                assert response.status_code == 401, (path, headers)
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert response.headers["www-authenticate"] == "Bearer"
                assert KEY not in response.text
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with wrong, pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client:
            assert [m.id for m in client.models.list().data] == [MODEL]
            reply = client.completions.create(model=MODEL, prompt="Tomorrow", max_tokens=2)
            assert reply.choices[0].finish_reason is not None


def test_host_header_must_be_one_of_the_allowed_names(engine_parts):
    hosts = ("127.0.0.1", "localhost", "::1", "llm.example")
    app = make_app(engine_parts, guards=GuardSettings(allowed_hosts=hosts))
    with serve_in_thread(app) as url:
        port = url.rsplit(":", 1)[1]
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", "LLM.example:443"):
            assert httpx.get(url + "/health", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "llm.example.evil"):
            response = httpx.get(url + "/health", headers={"host": host})
            assert response.status_code == 400, host
            assert response.json()["error"]["code"] == "host_not_allowed"


def test_any_host_with_a_star(engine_parts):
    app = make_app(engine_parts, guards=GuardSettings(allowed_hosts=("*",)))
    with serve_in_thread(app) as url:
        assert httpx.get(url + "/health", headers={"host": "anything.example"}).status_code == 200


def test_docs_are_off_by_default_and_never_load_a_cdn(engine_parts):
    with serve_in_thread(make_app(engine_parts)) as url:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert httpx.get(url + path).status_code == 404, path
    with serve_in_thread(make_app(engine_parts, enable_docs=True)) as url:
        schema = httpx.get(url + "/openapi.json")
        assert schema.status_code == 200
        assert "/v1/completions" in schema.json()["paths"]
        assert httpx.get(url + "/docs").status_code == 404  # its page loads scripts from a CDN
        assert "cdn" not in schema.text.lower()
