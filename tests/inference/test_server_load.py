"""Load test: 200 concurrent streaming requests to a live server, every fifth cancelled midway.

Every request that is not cancelled must stream exactly the greedy continuation that the
contiguous-cache `generate` gives for its prompt; a cancelled one still running on the server
must be aborted; afterwards no KV block may be held. Bounded: every request has a time limit
and the whole test has one. The prompts share prefixes (12 texts, each asked many times), so
the prefix cache is exercised.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.server import create_app, serve_in_thread
from llm_internals.inference.server.metrics import parse_prometheus_text

MODEL = "tiny-load"
REQUESTS = 200
CANCEL_EVERY = 5
MAX_TOKENS = 12
CANCELLED_MAX_TOKENS = 150  # long enough that a cancelled request is surely still running
TEXT = "Now is the winter of our discontent made glorious summer by this sun of York. " * 10
PROMPTS = [
    "Now is the winter",
    "Now is the winter of our discontent",
    "made glorious summer by this sun of York. Now is",
    "summer",
    "And all the clouds that lour'd upon our house",
    "In the deep bosom of the ocean buried.",
    "Now are our brows bound with victorious wreaths;",
    "Our bruised arms hung up for monuments;",
    "Our stern alarums changed to merry meetings,",
    "Our dreadful marches to delightful measures.",
    "Grim-visaged war hath smooth'd his wrinkled front;",
    "Now is the winter of our discontent made glorious summer by this sun of York. Now",
]
TEST_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory, write_tiny_checkpoint, load_float64):
    directory = tmp_path_factory.mktemp("tiny-load")
    checkpoint = write_tiny_checkpoint(directory, TEXT, seed=1, max_seq_len=256, vocab_size=320)
    return load_float64(checkpoint)


async def one_request(client, i: int) -> tuple[int, str, str | None, bool]:
    """(request number, streamed text, finish reason, cancelled?)."""
    prompt = PROMPTS[i % len(PROMPTS)]
    cancel = i % CANCEL_EVERY == 0
    stream = await client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, stream=True,
        max_tokens=CANCELLED_MAX_TOKENS if cancel else MAX_TOKENS,
        extra_body={"ignore_eos": True} if cancel else None,
    )  # fmt: skip
    text, reason, chunks = "", None, 0
    async for chunk in stream:
        text += chunk.choices[0].text
        reason = chunk.choices[0].finish_reason or reason
        chunks += 1
        if cancel and chunks == 3:
            await stream.close()  # hang up midway
            break
    return i, text, reason, cancel


def test_200_concurrent_streams_some_cancelled(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    expected = {p: generate(model, tokenizer, p, max_new_tokens=MAX_TOKENS) for p in PROMPTS}
    engine = LLM(model, tokenizer, block_size=8, num_blocks=400, max_num_seqs=32,
                 max_num_batched_tokens=512)  # fmt: skip
    app = create_app(engine, model_name=MODEL)
    started = time.monotonic()
    with serve_in_thread(app) as url:
        limits = httpx.Limits(max_connections=REQUESTS + 10)
        client = openai.AsyncOpenAI(
            base_url=url + "/v1",
            api_key="unused",
            max_retries=0,
            timeout=60,
            http_client=httpx.AsyncClient(limits=limits),
        )

        async def run_all():
            async with client:
                jobs = [one_request(client, i) for i in range(REQUESTS)]
                return await asyncio.wait_for(asyncio.gather(*jobs), TEST_TIMEOUT_S)

        results = asyncio.run(run_all())
        cancelled = [r for r in results if r[3]]
        assert len(results) == REQUESTS and len(cancelled) == REQUESTS // CANCEL_EVERY
        for i, text, reason, cancel in results:
            if cancel:
                continue
            reference = expected[PROMPTS[i % len(PROMPTS)]]
            assert text == reference.text, f"request {i}"
            assert reason == {"eos": "stop", "length": "length"}[reference.finish_reason]

        deadline = time.monotonic() + 15
        while True:  # the aborts reach the engine within a step or two
            values = parse_prometheus_text(httpx.get(url + "/metrics").text)
            idle = values["blocks_used"] == 0 and values["http_requests_in_flight"] == 0
            if idle or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert values["blocks_used"] == 0, "no KV block is leaked"
    assert values["blocks_free"] + values["blocks_cached"] == values["blocks_total"]
    assert values["requests_running"] == 0 and values["requests_waiting"] == 0
    assert values["http_requests_in_flight"] == 0
    assert values["requests_added_total"] == REQUESTS
    # Exact under any timing. Only a disconnect aborts, and an abort is counted on the engine
    # thread only when it finds the request still running: a client that hangs up after the
    # server had generated (and streamed into the socket buffers) all of its request aborts
    # nothing, and one whose response was written to the end is no disconnect at all.
    aborted, disconnects = values["requests_aborted_total"], values["http_client_disconnects_total"]
    assert aborted == values["http_disconnect_aborts_total"]
    assert 0 < aborted <= disconnects <= len(cancelled)
    assert values["engine_failures_total"] == 0
    assert values["requests_aborted_total"] + values["requests_finished_total"] == REQUESTS
    assert values["prefix_cache_hit_tokens_total"] > 0, "repeated prompts reuse cached blocks"
    assert time.monotonic() - started < TEST_TIMEOUT_S
