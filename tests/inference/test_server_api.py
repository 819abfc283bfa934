"""The OpenAI-compatible server, live on 127.0.0.1, driven by the official `openai` client.

The model is a tiny random decoder saved to a tmp dir (our checkpoint + a BPE tokenizer trained
here), loaded in float64 so greedy argmax ties cannot flip between the engine's batches and the
reference: the contiguous-cache `generate`, run on the same prompt alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.server import ServerLimits, create_app, serve_in_thread
from llm_internals.inference.server.chat_template import SimpleChatTemplate
from llm_internals.inference.server.metrics import parse_prometheus_text

MODEL = "tiny-test"
CONTEXT = 256
TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
) * 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, write_tiny_checkpoint):
    """A tiny random decoder and its tokenizer, saved as a checkpoint directory."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), TEXT, seed=0, max_seq_len=CONTEXT)


@pytest.fixture(scope="module")
def model_and_tokenizer(checkpoint, load_float64):
    return load_float64(checkpoint)


def make_engine(model_and_tokenizer, **kwargs) -> LLM:
    model, tokenizer = model_and_tokenizer
    options = dict(block_size=8, num_blocks=96, max_num_seqs=8, max_num_batched_tokens=128)
    return LLM(model, tokenizer, **(options | kwargs))


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    """(base url, the app's server state) of a live server with default limits."""
    engine = make_engine(model_and_tokenizer)
    app = create_app(engine, model_name=MODEL)
    with serve_in_thread(app) as url:
        yield url, app.state.server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0,
                       timeout=30) as client:  # fmt: skip
        yield client


def reference(model_and_tokenizer, prompt, max_tokens: int):
    model, tokenizer = model_and_tokenizer
    return generate(model, tokenizer, prompt, max_new_tokens=max_tokens)


def openai_reason(reason: str) -> str:
    return {"eos": "stop", "stop": "stop", "length": "length"}[reason]


def metrics(url: str) -> dict[str, float]:
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_prometheus_text(response.text)


def wait_for(url: str, condition, timeout: float = 15.0) -> dict[str, float]:
    """Poll /metrics until condition(values) holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        values = metrics(url)
        if condition(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.02)


def no_blocks_held(values: dict[str, float]) -> bool:
    idle = values["requests_running"] == values["requests_waiting"] == 0
    all_back = values["blocks_free"] + values["blocks_cached"] == values["blocks_total"]
    return idle and all_back and values["blocks_used"] == values["http_requests_in_flight"] == 0


# --- completions ----------------------------------------------------------------------------
PROMPTS = ["To be, or not", "the slings and arrows of", "Whether 'tis nobler in the mind"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_equals_greedy_generate(client, model_and_tokenizer, prompt):
    expected = reference(model_and_tokenizer, prompt, 20)
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    assert result.object == "text_completion" and result.model == MODEL
    assert [c.index for c in result.choices] == [0]
    assert result.choices[0].text == expected.text
    assert result.choices[0].finish_reason == openai_reason(expected.finish_reason)
    sampled = len(expected.token_ids) + (expected.finish_reason == "eos")
    assert result.usage.prompt_tokens == len(expected.prompt_ids)
    assert result.usage.completion_tokens == sampled
    assert result.usage.total_tokens == len(expected.prompt_ids) + sampled


def test_completion_stream_equals_non_stream(client, model_and_tokenizer):
    expected = reference(model_and_tokenizer, PROMPTS[1], 24)
    chunks = list(client.completions.create(
        model=MODEL, prompt=PROMPTS[1], max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert len({c.id for c in chunks}) == 1
    text_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert len(text_chunks) >= 2, "the text arrives in several chunks"
    assert "".join(c.choices[0].text for c in text_chunks) == expected.text
    assert [c.choices[0].finish_reason for c in text_chunks][:-1] == [None] * (len(text_chunks) - 1)
    assert text_chunks[-1].choices[0].finish_reason == openai_reason(expected.finish_reason)
    assert usage_chunk.choices == []
    assert usage_chunk.usage.prompt_tokens == len(expected.prompt_ids)


def test_completion_token_id_prompt_several_prompts_and_echo(client, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    ids = tokenizer.encode(PROMPTS[0])
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == reference(model_and_tokenizer, ids, 8).text
    several = client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=8, temperature=0,
                                        echo=True)  # fmt: skip
    assert [c.index for c in several.choices] == [0, 1, 2]
    for choice, prompt in zip(several.choices, PROMPTS, strict=True):
        assert choice.text == prompt + reference(model_and_tokenizer, prompt, 8).text
    assert several.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in PROMPTS)


def test_stop_string_cuts_the_text(client, model_and_tokenizer):
    full = reference(model_and_tokenizer, PROMPTS[2], 30).text
    stop = full[5:7]  # two characters from inside the greedy continuation
    assert stop and len(full) > 7
    result = client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=30,
                                       temperature=0, stop=[stop])  # fmt: skip
    assert result.choices[0].text == full[: full.index(stop)]
    assert result.choices[0].finish_reason == "stop"


def test_parallel_samples_are_seeded_and_distinct(client):
    def sample():
        return client.completions.create(
            model=MODEL,
            prompt=PROMPTS[0],
            max_tokens=12,
            n=3,
            temperature=1.0,
            seed=7,
            extra_body={"ignore_eos": True},
        )

    first, second = sample(), sample()
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.text for c in second.choices], "the same seed gives the same samples"
    assert len(set(texts)) == 3, "each sample draws from its own generator"
    assert first.usage.completion_tokens == 3 * 12


# --- chat -----------------------------------------------------------------------------------
MESSAGES = [
    {"role": "system", "content": "You speak in verse."},
    {"role": "user", "content": "To be, or not to be?"},
]


def test_chat_equals_greedy_generate_on_the_template(client, model_and_tokenizer):
    template = SimpleChatTemplate()
    prompt = template.render(MESSAGES)
    assert prompt == "System: You speak in verse.\n\nUser: To be, or not to be?\n\nAssistant:"
    model, tokenizer = model_and_tokenizer
    expected = generate(
        model, tokenizer, prompt, max_new_tokens=20, stop=template.stop, temperature=0.0
    )
    result = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20,
                                            temperature=0)  # fmt: skip
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == expected.text
    assert result.choices[0].finish_reason == openai_reason(expected.finish_reason)
    assert result.usage.prompt_tokens == len(tokenizer.encode(prompt))

    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20,
                                            temperature=0, stream=True)  # fmt: skip
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == openai_reason(expected.finish_reason)


def test_chat_default_max_tokens_fills_the_context(client, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    result = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, extra_body={"ignore_eos": True, "stop": None}
    )
    prompt_tokens = len(tokenizer.encode(SimpleChatTemplate().render(MESSAGES)))
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == CONTEXT - prompt_tokens


# --- other endpoints ------------------------------------------------------------------------
def test_models_health_and_metrics_formats(client, server):
    url, _ = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.models.retrieve("gpt-4")
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    prometheus = metrics(url)
    as_json = httpx.get(url + "/metrics", params={"format": "json"}).json()
    assert prometheus.keys() == as_json.keys()
    assert prometheus["blocks_total"] == 96 and prometheus["block_size"] == 8
    assert prometheus["generated_tokens_total"] >= 0
    assert httpx.get(url + "/metrics", params={"format": "xml"}).status_code == 400


# --- bad requests ---------------------------------------------------------------------------
BAD_REQUESTS = [
    ("completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("completions", {"prompt": "x", "temperature": 3.5}, "temperature"),
    ("completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("completions", {"prompt": "x", "n": 0}, "n"),
    ("completions", {"prompt": "x", "n": 9}, "n"),  # more than max_num_seqs=8
    ("completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("completions", {"prompt": "x", "bogus": 1}, "bogus"),
    ("completions", {"prompt": "x", "logprobs": 2}, "logprobs"),
    ("completions", {"prompt": ""}, "prompt"),
    ("completions", {"prompt": [1, -2]}, "prompt"),
    ("completions", {"prompt": [299999]}, "prompt"),
    ("completions", {"prompt": "x", "max_tokens": CONTEXT}, "max_tokens"),
    ("completions", {"prompt": "To be " * 200}, "prompt"),
    ("completions", {"max_tokens": 4}, "prompt"),
    ("completions", {"prompt": "x", "seed": -1}, "seed"),
    ("chat/completions", {"messages": []}, "messages"),
    ("chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    (
        "chat/completions",
        {"messages": MESSAGES, "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    ("chat/completions", {"messages": MESSAGES, "presence_penalty": 9}, "presence_penalty"),
]


@pytest.mark.parametrize(("endpoint", "body", "field"), BAD_REQUESTS)
def test_invalid_requests_are_400_naming_the_field(server, endpoint, body, field):
    url, _ = server
    response = httpx.post(f"{url}/v1/{endpoint}", json={"model": MODEL} | body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert field in error["message"]


def test_openai_client_raises_bad_request_and_not_found(client):
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=-1)
    with pytest.raises(openai.NotFoundError, match="gpt-4"):
        client.completions.create(model="gpt-4", prompt="x")


def test_body_that_is_not_json_is_400(server):
    response = httpx.post(f"{server[0]}/v1/completions", content=b"{not json",
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


# --- limits and disconnects -----------------------------------------------------------------
def pause_engine(state) -> threading.Event:
    """Block the engine thread (between steps) until the returned event is set."""
    release = threading.Event()
    state.loop.call_soon(lambda engine: release.wait(30))
    return release


def test_beyond_max_concurrent_requests_is_429(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer)
    app = create_app(engine, model_name=MODEL, limits=ServerLimits(max_concurrent_requests=2))
    state = app.state.server
    with serve_in_thread(app) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        async def scenario():
            release = pause_engine(state)  # the first two stay in flight until released
            calls = [client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0)
                     for p in PROMPTS[:2]]  # fmt: skip
            held = [asyncio.ensure_future(call) for call in calls]
            for _ in range(500):
                if state.in_flight == 2:
                    break
                await asyncio.sleep(0.01)
            assert state.in_flight == 2
            with pytest.raises(openai.RateLimitError, match="too many requests"):
                await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
            with pytest.raises(openai.BadRequestError, match="3 prompts in one request"):
                await client.completions.create(model=MODEL, prompt=PROMPTS, max_tokens=2)
            release.set()
            results = await asyncio.gather(*held)
            after = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
            await client.close()
            return results, after

        results, after = asyncio.run(scenario())
        for result, prompt in zip(results, PROMPTS[:2], strict=True):
            assert result.choices[0].text == reference(model_and_tokenizer, prompt, 6).text
        assert after.choices[0].finish_reason is not None
        values = wait_for(url, no_blocks_held)
        assert values["http_requests_rejected_total"] == 1
        assert no_blocks_held(values)


@pytest.fixture
def slow_steps(server, monkeypatch):
    """Each engine step of the shared server takes at least 2 ms more, so a 200-token request
    surely runs longer than the client needs to hang up (the steps themselves are the real ones)."""
    engine = server[1].loop.engine
    real_step = engine.step

    def step():
        time.sleep(0.002)
        return real_step()

    monkeypatch.setattr(engine, "step", step)


def test_streaming_disconnect_aborts_and_frees_blocks(server, slow_steps):
    url, _ = server
    before = metrics(url)
    body = {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 200, "temperature": 0,
            "stream": True, "ignore_eos": True}  # fmt: skip
    with httpx.Client(timeout=30) as http, http.stream("POST", url + "/v1/completions",
                                                       json=body) as response:  # fmt: skip
        assert response.status_code == 200
        lines = response.iter_lines()
        events = []
        for line in lines:
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                break
        assert metrics(url)["blocks_used"] > 0, "the request holds blocks while it runs"
    # leaving the block closed the connection mid-stream
    values = wait_for(url, lambda v: no_blocks_held(v) and v["requests_aborted_total"] > 0)
    assert values["requests_aborted_total"] == before["requests_aborted_total"] + 1
    assert values["http_client_disconnects_total"] == before["http_client_disconnects_total"] + 1
    assert no_blocks_held(values)
    assert values["generated_tokens_total"] - before["generated_tokens_total"] < 200


def test_non_streaming_disconnect_aborts_and_frees_blocks(server, slow_steps):
    url, state = server
    before = metrics(url)
    release = pause_engine(state)
    body = {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/completions", json=body, timeout=0.5)
    release.set()  # the engine adds the request, the server sees the client gone and aborts it
    values = wait_for(url, lambda v: no_blocks_held(v) and v["requests_aborted_total"] > 0)
    assert values["requests_aborted_total"] == before["requests_aborted_total"] + 1
    assert no_blocks_held(values)
    assert values["generated_tokens_total"] - before["generated_tokens_total"] < 200


def test_streaming_several_prompts_and_samples(client, model_and_tokenizer):
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    stream = client.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=10, n=2,
                                       temperature=0, stream=True)  # fmt: skip
    for chunk in stream:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason is not None:
            assert choice.index not in reasons, "one finish_reason per choice"
            reasons[choice.index] = choice.finish_reason
    assert sorted(texts) == sorted(reasons) == [0, 1, 2, 3]
    for index in range(4):  # greedy: both samples of a prompt are its greedy continuation
        expected = reference(model_and_tokenizer, PROMPTS[index // 2], 10)
        assert texts[index] == expected.text
        assert reasons[index] == openai_reason(expected.finish_reason)


def test_request_the_kv_pool_can_never_hold_is_400(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer, num_blocks=4)  # 32 token slots in all
    app = create_app(engine, model_name=MODEL)
    with serve_in_thread(app) as url:
        body = {"model": MODEL, "prompt": PROMPTS[2], "max_tokens": 30}
        response = httpx.post(url + "/v1/completions", json=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "prompt" and "KV blocks" in error["message"]
        small = httpx.post(url + "/v1/completions", json=body | {"max_tokens": 4})
        assert small.status_code == 200
