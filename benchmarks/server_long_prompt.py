"""Does a long prompt stall the server? /health probe latency while one ~1 MB prompt (random
words: no two chunks alike, so the tokenizer's cache does not help) is posted to the live server
(uvicorn on 127.0.0.1, a tiny random decoder, a 300-token BPE vocabulary). Three ways, run
interleaved in one process, `--rounds` times each:
  reference: the prompt tokenized on the event loop (the server before issue 12 §2; here the
             tokenizing thread is bypassed), so every probe waits for the whole tokenization;
  bound:     the server as it is: refused at once by the character bound (max_prompt_tokens x the
             longest token), never tokenized;
  off-loop:  the character bound raised so that the prompt is tokenized, on the tokenizing
             thread: the event loop answers meanwhile.
Each gets a 400 in the end (the prompt has far more tokens than the context). Printed: the big
request's time, the number of probes answered meanwhile, the worst and median probe latency, and
the worst-probe ratio to the reference.

    .venv/bin/python benchmarks/server_long_prompt.py [--words 160000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import httpx
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.server import ServerLimits, create_app, serve_in_thread
from llm_internals.inference.server.guards import GuardSettings
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

TEXT = "Out, damned spot! out, I say! One: two: why, then, 'tis time to do't. " * 10


def measure(mode: str, model, tokenizer, prompt: str) -> tuple[int, float, list[float]]:
    limits = ServerLimits(max_prompt_chars=10**9) if mode != "bound" else ServerLimits()
    engine = LLM(model, tokenizer, block_size=8, num_blocks=48, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    app = create_app(engine, model_name="m", limits=limits,
                     guards=GuardSettings(max_body_bytes=64 * 2**20))  # fmt: skip
    state = app.state.server
    if mode == "reference":

        async def on_the_loop(fn):
            return fn()

        state.off_loop = on_the_loop
    with serve_in_thread(app) as url:

        async def run() -> tuple[int, float, list[float]]:
            async with httpx.AsyncClient(base_url=url, timeout=300) as http:
                await http.get("/health")
                started = time.perf_counter()
                body = {"model": "m", "prompt": prompt}
                big = asyncio.ensure_future(http.post("/v1/completions", json=body))
                latencies = []
                while not big.done():
                    probe = time.perf_counter()
                    assert (await http.get("/health")).status_code == 200
                    latencies.append(time.perf_counter() - probe)
                    await asyncio.sleep(0.02)
                response = await big
                return response.status_code, time.perf_counter() - started, latencies

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=160_000, help="words in the prompt (160000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode (3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = train_bpe(TEXT, 300)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=128)  # fmt: skip
    model = DecoderLM(config)
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    prompt = " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
                      for _ in range(args.words))  # fmt: skip
    print(f"prompt {len(prompt) / 1e6:.2f} MB; load average {os.getloadavg()[0]:.2f}")
    modes = ("reference", "bound", "off-loop")
    results: dict[str, list[tuple[int, float, list[float]]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            results[mode].append(measure(mode, model, tokenizer, prompt))
    worst_reference = statistics.median(max(r[2]) for r in results["reference"])
    print("| mode | status | request s (median) | probes answered | worst probe ms (median) "
          "| median probe ms | worst probe / reference |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        runs = results[mode]
        worst = statistics.median(max(r[2]) for r in runs)
        print(f"| {mode} | {runs[0][0]} | {statistics.median(r[1] for r in runs):.2f} | "
              f"{sum(len(r[2]) for r in runs)} | {worst * 1000:.0f} | "
              f"{statistics.median(statistics.median(r[2]) for r in runs) * 1000:.0f} | "
              f"{worst / worst_reference:.2f} |")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
