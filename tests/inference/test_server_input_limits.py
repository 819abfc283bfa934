"""No input may stall or crash the server: strict types (as the OpenAI API), errors in the
OpenAI shape for every route and body, capped stop lists, a body-size limit, prompts refused by
length before tokenizing, and tokenizing off the event loop (/health answers meanwhile)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

import httpx
import pytest

from llm_internals.inference.paged import LLM
from llm_internals.inference.server import (
    JinjaChatTemplate,
    ServerLimits,
    create_app,
    serve_in_thread,
)
from llm_internals.inference.server.guards import GuardSettings
from llm_internals.inference.server.prompts import longest_token_chars
from llm_internals.inference.server.schema import MAX_STOP_CHARS, MAX_STOP_TOKEN_IDS

MODEL = "tiny-limits"
CONTEXT = 128
TEXT = "Out, damned spot! out, I say! One: two: why, then, 'tis time to do't. " * 10
MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory, write_tiny_checkpoint, load_float64):
    directory = tmp_path_factory.mktemp("tiny-limits")
    return load_float64(write_tiny_checkpoint(directory, TEXT, seed=4, max_seq_len=CONTEXT))


def make_app(model_and_tokenizer, **kwargs):
    model, tokenizer = model_and_tokenizer
    engine = LLM(model, tokenizer, block_size=8, num_blocks=48, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    return create_app(engine, model_name=MODEL, **kwargs)


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    app = make_app(model_and_tokenizer)
    with serve_in_thread(app) as url:
        yield url, app.state.server


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if param is not None:
        assert param in error["message"]
    return error


WRONG_TYPES = [
    ("completions", {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": 5.0}, "max_tokens"),
    ("completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("completions", {"prompt": "x", "stream": 1}, "stream"),
    ("completions", {"prompt": "x", "n": 1.5}, "n"),
    ("completions", {"prompt": "x", "echo": 1}, "echo"),
    ("completions", {"prompt": "x", "temperature": "0.5"}, "temperature"),
    ("completions", {"prompt": "x", "seed": "7"}, "seed"),
    ("completions", {"prompt": "x", "ignore_eos": "true"}, "ignore_eos"),
    ("completions", {"prompt": "x", "top_k": 2.0}, "top_k"),
    ("completions", {"prompt": [5, True]}, "prompt"),
    ("completions", {"prompt": "x", "stop_token_ids": [1.0]}, "stop_token_ids"),
    ("completions", {"prompt": "x", "model": 5}, "model"),
    ("chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages"),
    (
        "chat/completions",
        {"messages": MESSAGES, "max_completion_tokens": "3"},
        "max_completion_tokens",
    ),  # fmt: skip
    (
        "chat/completions",
        {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options",
    ),  # fmt: skip
]
CAPS = [
    ("completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("completions", {"prompt": "x", "stop": "s" * (MAX_STOP_CHARS + 1)}, "stop"),
    ("completions", {"prompt": "x", "stop": ["ok", "s" * (MAX_STOP_CHARS + 1)]}, "stop"),
    (
        "completions",
        {"prompt": "x", "stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)},
        "stop_token_ids",
    ),  # fmt: skip
    ("completions", {"prompt": "x", "stop_token_ids": [10**6]}, "stop_token_ids"),
]
# Values the sampler cannot survive pass the schema's ranges; SamplingParams refuses them and
# the server turns its error into a 400 naming the field.
EXTREME = [
    ("completions", {"prompt": "x", "repetition_penalty": 1e-40}, "repetition_penalty"),
    (
        "chat/completions",
        {"messages": MESSAGES, "repetition_penalty": 1e39},
        "repetition_penalty",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("endpoint", "body", "field"), WRONG_TYPES + CAPS + EXTREME)
def test_wrong_types_caps_and_extreme_values_are_400_naming_the_field(server, endpoint, body,
                                                                      field):  # fmt: skip
    response = httpx.post(f"{server[0]}/v1/{endpoint}", json={"model": MODEL} | body)
    error = assert_openai_error(response, 400, field)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "extreme",
    [
        {"temperature": 1e-44},
        {"temperature": 5e-324},
        {"top_p": 1e-300},
        {"top_p": 5e-324, "temperature": 2.0},
        {"repetition_penalty": 1.2e-38},
    ],  # fmt: skip
)
def test_extreme_values_the_sampler_survives_are_served_and_the_engine_stays_up(server, extreme):
    url, state = server
    body = {"model": MODEL, "prompt": "Out, damned", "max_tokens": 3, "seed": 1} | extreme
    response = httpx.post(url + "/v1/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("length", "stop", "error")
    assert httpx.get(url + "/health").status_code == 200
    assert state.loop.epoch == 0, "the engine never failed"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(server, literal):
    body = f'{{"model": "{MODEL}", "prompt": "x", "temperature": {literal}}}'.encode()
    response = httpx.post(f"{server[0]}/v1/completions", content=body,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert_openai_error(response, 400, "temperature")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nothing", 404),
        ("POST", "/v2/completions", 404),
        ("GET", "/docs", 404),
        ("GET", "/openapi.json", 404),
        ("GET", "/v1/completions", 405),
        ("DELETE", "/health", 405),
    ],  # fmt: skip
)
def test_unknown_routes_and_methods_answer_in_the_openai_shape(server, method, path, status):
    error = assert_openai_error(httpx.request(method, server[0] + path), status)
    assert path in error["message"]


@pytest.mark.parametrize(
    "body", [b'{"model": "\xff\xfe", "prompt": "x"}', b"\xff\xfe\xfd", b"", b"[1, 2", b"null"]
)
def test_bodies_that_are_not_utf8_json_objects_are_400(server, body):
    response = httpx.post(f"{server[0]}/v1/completions", content=body,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_chat_template_raise_exception_is_400_and_the_server_goes_on(model_and_tokenizer):
    source = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}assistant:"
    )
    app = make_app(model_and_tokenizer, chat_template=JinjaChatTemplate(source))
    with serve_in_thread(app) as url:
        refused = httpx.post(url + "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "system", "content": "Be terse."}]})  # fmt: skip
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
        served = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    error = assert_openai_error(refused, 400, "messages")
    assert "System role not supported" in error["message"]
    assert served.status_code == 200


def test_body_beyond_max_body_bytes_is_413(model_and_tokenizer):
    app = make_app(model_and_tokenizer, guards=GuardSettings(max_body_bytes=2000))
    body = b'{"model": "%s", "prompt": "%s"}' % (MODEL.encode(), b"a" * 3000)

    def chunked():  # no Content-Length: the limit must hold while the body arrives
        yield from (body[i : i + 500] for i in range(0, len(body), 500))

    with serve_in_thread(app) as url:
        declared = httpx.post(url + "/v1/completions", content=body)
        streamed = httpx.post(url + "/v1/completions", content=chunked())
        small = httpx.post(url + "/v1/completions", timeout=30,
                           json={"model": MODEL, "prompt": "One", "max_tokens": 2})  # fmt: skip
    for response in (declared, streamed):
        error = assert_openai_error(response, 413)
        assert "2000" in error["message"] and "--max-body-bytes" in error["message"]
        assert response.headers["connection"] == "close"
    assert small.status_code == 200


def test_a_declared_10_mb_body_is_413_before_it_is_sent(server):
    """Content-Length alone decides: the server answers before a byte of the body arrives."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 10485760\r\n\r\n")  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"10485760" in answer and b"--max-body-bytes" in answer
    assert httpx.get(url + "/health").status_code == 200


def test_character_bound_is_sound_for_the_tokenizer(model_and_tokenizer):
    """A text of C characters has at least C / L tokens (L = longest_token_chars), so refusing
    by characters never refuses a prompt within the token limit."""
    _, tokenizer = model_and_tokenizer
    longest = longest_token_chars(tokenizer)
    assert longest == max(len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size))
    rng = random.Random(0)
    pieces = TEXT.split(" ")
    for _ in range(50):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        assert len(text) <= len(tokenizer.encode(text)) * longest


def test_prompt_beyond_the_character_bound_is_refused_without_tokenizing(server, monkeypatch):
    url, state = server
    calls = []
    real_encode = state.tokenizer.encode
    monkeypatch.setattr(state.tokenizer, "encode",
                        lambda *a, **k: calls.append(1) or real_encode(*a, **k))  # fmt: skip
    limit = state.limits.max_prompt_chars
    assert limit == state.limits.max_prompt_tokens * longest_token_chars(state.tokenizer)
    for endpoint, body, field in [
        ("completions", {"prompt": "a" * (limit + 1)}, "prompt"),
        ("completions", {"prompt": ["ok", "a" * (limit + 1)]}, "prompt[1]"),
        (
            "chat/completions",
            {"messages": [{"role": "user", "content": "a" * (limit + 1)}]},
            "messages",
        ),  # fmt: skip
    ]:
        response = httpx.post(f"{url}/v1/{endpoint}", json={"model": MODEL} | body)
        error = assert_openai_error(response, 400, field)
        assert "characters" in error["message"]
    assert calls == [], "nothing was tokenized"


def test_tokenizing_happens_off_the_event_loop(server, monkeypatch):
    """While a prompt is being tokenized (held on purpose), /health still answers: the order
    of events is checked, not the time."""
    url, state = server
    started, release, events = threading.Event(), threading.Event(), []
    real_encode = state.tokenizer.encode

    def held_encode(*args, **kwargs):
        started.set()
        release.wait(30)
        events.append("tokenized")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(state.tokenizer, "encode", held_encode)
    result = {}
    request = threading.Thread(target=lambda: result.update(response=httpx.post(
        url + "/v1/completions", timeout=30,
        json={"model": MODEL, "prompt": "One: two", "max_tokens": 2})))  # fmt: skip
    request.start()
    assert started.wait(30)
    health = httpx.get(url + "/health", timeout=5)
    events.append(f"health {health.status_code}")
    release.set()
    request.join(30)
    assert events == ["health 200", "tokenized"]
    assert result["response"].status_code == 200


def test_health_answers_while_a_huge_prompt_is_tokenized(model_and_tokenizer):
    """A real long tokenization (a megabyte of random words, let through by a raised character
    bound) must not stall /health. Measured against the request's own duration, so the bound
    holds on a slow or loaded machine: on the event loop, the first probe would wait for nearly
    the whole tokenization (0.86 of the request in benchmarks/server_long_prompt.py); off it,
    each probe waits for a few GIL switches (0.1)."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = (
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(160_000)
    )  # fmt: skip
    huge = " ".join(words)
    app = make_app(model_and_tokenizer, limits=ServerLimits(max_prompt_chars=10**7),
                   guards=GuardSettings(max_body_bytes=10**7))  # fmt: skip
    with serve_in_thread(app) as url:

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                started = time.perf_counter()
                big = asyncio.ensure_future(
                    http.post("/v1/completions", json={"model": MODEL, "prompt": huge})
                )
                latencies = []
                while not big.done():
                    probe = time.perf_counter()
                    assert (await http.get("/health")).status_code == 200
                    latencies.append(time.perf_counter() - probe)
                    await asyncio.sleep(0.02)
                response = await big
                return response, time.perf_counter() - started, latencies

        response, took, latencies = asyncio.run(scenario())
    error = assert_openai_error(response, 400, "prompt")
    assert "tokens, more than this server's limit" in error["message"]
    assert len(latencies) >= 3, f"the request took {took:.2f} s: too short to probe it"
    assert max(latencies) < 0.5 * took, (took, latencies)
