"""No request may stop the engine: if `engine.step()` fails, the requests in flight end with an
error (a streaming one with an error event and [DONE]), a fresh engine serves later requests,
and no client ever sees the internal exception text. Without a fresh engine, or in a crash
loop, the server says so (503) and `serve` exits non-zero. Failures are injected into the real
engine's step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from llm_internals.cli import main
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.paged import engine as engine_module
from llm_internals.inference.server import create_app, serve_in_thread
from llm_internals.inference.server.engine_loop import MAX_FAILURES
from llm_internals.inference.server.metrics import parse_prometheus_text

MODEL = "tiny-fail"
SECRET = "internal detail 0xdeadbeef"  # the injected exception's text: never shown to clients
TEXT = "Double, double toil and trouble; fire burn and cauldron bubble. " * 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, write_tiny_checkpoint):
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny-fail"), TEXT, seed=3, max_seq_len=128
    )


@pytest.fixture(scope="module")
def model_and_tokenizer(checkpoint, load_float64):
    return load_float64(checkpoint)


def make_engine(model_and_tokenizer) -> LLM:
    model, tokenizer = model_and_tokenizer
    return LLM(model, tokenizer, block_size=8, num_blocks=64, max_num_seqs=8,
               max_num_batched_tokens=128)  # fmt: skip


def fail_at_step(engine: LLM, failing_step: int) -> None:
    """engine.step() raises on its failing_step-th call (1-based), and only then."""
    real_step, calls = engine.step, [0]

    def step():
        calls[0] += 1
        if calls[0] == failing_step:
            raise RuntimeError(SECRET)
        time.sleep(0.002)  # a long request is surely still running at the failing step
        return real_step()

    engine.step = step


def metrics(url: str) -> dict[str, float]:
    return parse_prometheus_text(httpx.get(url + "/metrics").text)


def test_failure_ends_requests_in_flight_and_a_fresh_engine_serves_the_rest(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer)
    fail_at_step(engine, 6)
    built = []

    def fresh_engine() -> LLM:
        built.append(make_engine(model_and_tokenizer))
        return built[-1]

    app = create_app(engine, model_name=MODEL, engine_factory=fresh_engine)
    body = {"model": MODEL, "prompt": "Double, double", "max_tokens": 60, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    with serve_in_thread(app) as url:

        async def in_flight():
            state, release = app.state.server, threading.Event()
            state.loop.call_soon(lambda _engine: release.wait(30))  # both join one batch
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                streaming = http.post("/v1/completions", json=body | {"stream": True})
                plain = http.post("/v1/completions", json=body)
                both = asyncio.gather(streaming, plain)
                for _ in range(1000):
                    if state.in_flight == 2:
                        break
                    await asyncio.sleep(0.01)
                release.set()
                return await both

        streamed, plain = asyncio.run(in_flight())
        assert streamed.status_code == 200  # the stream had begun: the error is an event
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "server_error" and "engine failed" in error["message"]
        assert plain.status_code == 503
        assert plain.json()["error"]["type"] == "server_error"
        for text in (streamed.text, plain.text):
            assert SECRET not in text and "RuntimeError" not in text

        health = httpx.get(url + "/health")
        assert health.status_code == 200 and SECRET not in health.text
        later = httpx.post(url + "/v1/completions", timeout=30,
                           json=body | {"max_tokens": 12, "ignore_eos": False})  # fmt: skip
        assert later.status_code == 200
        model, tokenizer = model_and_tokenizer
        expected = generate(model, tokenizer, "Double, double", max_new_tokens=12)
        assert later.json()["choices"][0]["text"] == expected.text
        values = metrics(url)
    assert len(built) == 1 and app.state.server.loop.engine is built[0]
    assert values["engine_failures_total"] == 1
    assert values["requests_added_total"] == 1, "the fresh engine's counters start from 0"
    assert values["blocks_used"] == 0 and values["http_requests_in_flight"] == 0


def test_without_a_fresh_engine_the_server_says_503_without_the_exception_text(
    model_and_tokenizer,
):
    engine = make_engine(model_and_tokenizer)
    fail_at_step(engine, 1)
    app = create_app(engine, model_name=MODEL)
    with serve_in_thread(app) as url:
        first = httpx.post(url + "/v1/completions", timeout=10,
                           json={"model": MODEL, "prompt": "x", "max_tokens": 3})  # fmt: skip
        health = httpx.get(url + "/health")
        again = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
        stats = httpx.get(url + "/metrics")
    for response in (first, health, again, stats):
        assert response.status_code == 503
        assert SECRET not in response.text and "RuntimeError" not in response.text
    assert again.json()["error"]["message"].startswith("the engine failed and is not running")
    assert app.state.server.loop.error is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_exits_non_zero_when_the_engine_keeps_failing(checkpoint, monkeypatch, capsys):
    def broken_step(self):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(engine_module.LLM, "step", broken_step)  # every fresh engine fails too
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    answers, finished = [], threading.Event()

    def client():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        for _ in range(MAX_FAILURES):
            answers.append(httpx.post(url + "/v1/completions", timeout=10,
                                      json={"model": "tiny", "prompt": "x"}))  # fmt: skip
        if not finished.wait(20):  # the server should be gone by now; if not, stop it
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=client, daemon=True).start()
    code = main(["serve", "--model", str(checkpoint), "--port", str(port), "--served-model-name",
                 "tiny", "--num-blocks", "32", "--block-size", "8", "--threads", "1",
                 "--log-level", "critical"])  # fmt: skip
    finished.set()
    out = capsys.readouterr().out
    assert code == 2, out
    assert "the engine kept failing" in out
    assert [a.status_code for a in answers] == [503] * MAX_FAILURES
    assert all(SECRET not in a.text for a in answers)
