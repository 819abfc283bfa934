"""Serving over HTTP: what the OpenAI-compatible server costs on top of the engine it wraps.

Same run, same random decoder (by default d_model 256, 4 layers, heads of 64; a 1,024-token BPE
vocabulary trained on the first 300k characters of the corpus), same engine settings, N requests
(default 64) with random token-id prompts of 16-256 tokens and outputs of 16-128 tokens (seed 0,
greedy, ignore_eos so each request gets exactly its output length):
  reference: the engine offline, `LLM.generate(all prompts)` in this process;
  server:    `llm-internals serve` as its own process, all N requests sent at once as streaming
             /v1/completions by an asyncio httpx client in this process; wall time from the first
             request sent to the last `data: [DONE]`.
tok/s ratio = server output tokens/s / offline output tokens/s (1.0 = no overhead); CPU ratio =
CPU seconds of the server process / of the offline run (the client's own parsing runs in this
process, so on a small shared CPU it also takes cores from the server: the CPU ratio isolates
the server's cost). Also the time to first token (server: until the first text chunk arrives).
The streamed texts are compared with the offline texts. One torch thread in both.

    .venv/bin/python benchmarks/server_overhead.py
    .venv/bin/python benchmarks/server_overhead.py --requests 16    # quicker
    .venv/bin/python benchmarks/server_overhead.py --d-model 768 --layers 12   # GPT-2-small body
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from rich.console import Console
from rich.table import Table

from llm_internals.data import corpus
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.tokenizer import train_bpe

console = Console(highlight=False, width=160)


def make_checkpoint(directory: Path, d_model: int, n_layers: int) -> None:
    tokenizer = train_bpe(corpus("shakespeare")[:300_000], 1024)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=d_model, n_layers=n_layers,
                         n_heads=d_model // 64, max_seq_len=512)  # fmt: skip
    save_checkpoint(DecoderLM(config), directory)
    tokenizer.save(directory / "tokenizer.json")


def make_workload(n: int, vocab: int, seed: int = 0) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(256, vocab) for _ in range(rng.randint(16, 256))], rng.randint(16, 128))
            for _ in range(n)]  # fmt: skip


def offline(directory: Path, workload) -> tuple[float, float, list[str], list[float]]:
    """(wall s, CPU s, texts, TTFTs) of the engine alone."""
    engine = LLM(str(directory))
    engine.generate([workload[0][0]], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for _, m in workload]
    started, cpu = time.perf_counter(), time.process_time()
    outputs = engine.generate([p for p, _ in workload], params)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ttft = [o.metrics.time_to_first_token for o in outputs]
    return wall, cpu, [o.text for o in outputs], ttft


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def stream_one(client: httpx.AsyncClient, prompt: list[int], max_tokens: int,
                     started: float) -> tuple[str, float]:  # fmt: skip
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}  # fmt: skip
    text, first = "", None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                piece = json.loads(line[6:])["choices"][0]["text"]
                if piece and first is None:
                    first = time.perf_counter() - started
                text += piece
    return text, first if first is not None else float("nan")


async def through_server(
    url: str, pid: int, workload
) -> tuple[float, float, list[str], list[float]]:
    """(wall s, the server process's CPU s, texts, TTFTs) over HTTP."""
    limits = httpx.Limits(max_connections=len(workload) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await stream_one(client, workload[0][0], 4, time.perf_counter())  # warm-up
        started, cpu = time.perf_counter(), process_cpu_s(pid)
        results = await asyncio.gather(
            *(stream_one(client, p, m, started) for p, m in workload)
        )  # fmt: skip
        wall, cpu = time.perf_counter() - started, process_cpu_s(pid) - cpu
    return wall, cpu, [t for t, _ in results], [f for _, f in results]


def server(directory: Path, workload) -> tuple[float, float, list[str], list[float]]:
    port = free_port()
    command = [sys.executable, "-m", "llm_internals", "serve", "--model", str(directory),
               "--served-model-name", "bench", "--port", str(port), "--threads", "1",
               "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        return asyncio.run(through_server(url, process.pid, workload))
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="requests (64)")
    parser.add_argument("--d-model", type=int, default=256, help="model width (256)")
    parser.add_argument("--layers", type=int, default=4, help="model layers (4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_checkpoint(directory, args.d_model, args.layers)
        vocab = json.loads((directory / "config.json").read_text())["config"]["vocab_size"]
        workload = make_workload(args.requests, vocab)
        tokens = sum(m for _, m in workload)
        off_wall, off_cpu, off_texts, off_ttft = offline(directory, workload)
        srv_wall, srv_cpu, srv_texts, srv_ttft = server(directory, workload)
    same = sum(a == b for a, b in zip(off_texts, srv_texts, strict=True))
    table = Table(title=f"d_model {args.d_model}, {args.layers} layers: {args.requests} requests, "
                  f"{tokens} output tokens; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    columns = ("system", "wall s", "output tok/s", "tok/s ratio", "CPU s", "CPU ratio",
               "TTFT mean s", "TTFT median s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "system" else "right")
    off_rate, srv_rate = tokens / off_wall, tokens / srv_wall
    table.add_row("engine offline (reference)", f"{off_wall:.2f}", f"{off_rate:.0f}", "1.00",
                  f"{off_cpu:.2f}", "1.00", f"{statistics.fmean(off_ttft):.2f}",
                  f"{statistics.median(off_ttft):.2f}")  # fmt: skip
    table.add_row("HTTP server, streaming", f"{srv_wall:.2f}", f"{srv_rate:.0f}",
                  f"{srv_rate / off_rate:.2f}", f"{srv_cpu:.2f}", f"{srv_cpu / off_cpu:.2f}",
                  f"{statistics.fmean(srv_ttft):.2f}",
                  f"{statistics.median(srv_ttft):.2f}")  # fmt: skip
    console.print(table)
    console.print(f"streamed texts equal to the offline texts: {same}/{len(workload)}")


if __name__ == "__main__":
    main()
