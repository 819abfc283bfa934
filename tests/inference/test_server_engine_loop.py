"""The engine loop's abort count is exact under any timing: closing a handle aborts (and counts)
only the requests the engine still runs. A request that finished on the engine thread while its
output was still on the way to the event loop has nothing to abort; counting it made
http_client_disconnects_total and requests_aborted_total disagree once in the load test."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.server.engine_loop import EngineLoop, EngineRequest
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

TEXT = "All the world's a stage, and all the men and women merely players. " * 10


@pytest.fixture(scope="module")
def engine_parts():
    tokenizer = train_bpe(TEXT, 280)
    torch.manual_seed(7)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, max_seq_len=64)  # fmt: skip
    return DecoderLM(config), tokenizer


def run_scenario(engine_parts, scenario):
    model, tokenizer = engine_parts
    engine = LLM(model, tokenizer, block_size=8, num_blocks=32, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    loop = EngineLoop(engine)
    ids = tokenizer.encode("All the world's")

    async def main():
        loop.start()
        try:
            await scenario(loop, engine, ids)
            return await loop.call(lambda e: (e.stats(), loop.aborted_requests))
        finally:
            loop.stop()

    return asyncio.run(main())


def test_closing_after_the_engine_finished_aborts_and_counts_nothing(engine_parts):
    async def scenario(loop, engine, ids):
        request = EngineRequest("r-0", ids, SamplingParams(max_tokens=1, temperature=0))
        handle = await loop.submit([request])
        deadline = time.monotonic() + 10
        while "r-0" in engine.requests:  # blocks the event loop: the output cannot arrive
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not handle.finished, "the event loop has not seen the output yet"
        handle.close()  # as when a client hangs up at this moment

    stats, aborted = run_scenario(engine_parts, scenario)
    assert (stats.num_requests_finished, stats.num_requests_aborted, aborted) == (1, 0, 0)


def test_closing_a_running_request_aborts_and_counts_it(engine_parts):
    async def scenario(loop, engine, ids):
        params = SamplingParams(max_tokens=56, temperature=0, ignore_eos=True)
        handle = await loop.submit([EngineRequest("r-1", ids, params)])
        paused, release = threading.Event(), threading.Event()
        loop.call_soon(lambda _engine: (paused.set(), release.wait(10)))  # between two steps
        assert paused.wait(10)
        assert "r-1" in engine.requests, "still running while the engine waits"
        handle.close()  # the abort is queued behind the wait, so it finds r-1 running
        release.set()

    stats, aborted = run_scenario(engine_parts, scenario)
    assert (stats.num_requests_finished, stats.num_requests_aborted, aborted) == (0, 1, 1)
