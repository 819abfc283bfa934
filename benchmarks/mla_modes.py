"""MLA's two attention modes, measured: why `mla.attn_mode = "auto"` expands keys and values
(naive) when every key is new and attends in the latent space (absorbed) when keys come from the
cache (layers/mla.py).

    .venv/bin/python benchmarks/mla_modes.py [--rounds 5] [--threads 1] [--prompt-len 256]
        [--new-tokens 48] [--prefill-len 512]

Model: a random DecoderLM, d 256, 8 heads, 4 layers, DeepSeek-V3's MLA ratios at head_dim 32
(kv_lora_rank 128 = 4 x head, qk_rope_head_dim 16, qk_nope_head_dim 32, v_head_dim 32, no query
compression), attn_impl sdpa and fused ops; one model, its blocks switched between modes.
- decode: greedy `generate` with the latent cache, batch 1, ms per token = (t(N) - t(1)) / (N - 1)
  so the prefill cancels; the same for an MHA and a GQA model of the same width (their caches:
  2 x 8 x 32 = 512 and 2 x 2 x 32 = 128 values per token per layer, MLA 144).
- prefill: one forward over prefill-len tokens without a cache, naive vs absorbed.
Rounds alternate between the variants (median of this process's CPU time reported, 1 thread)
with the load average beside them, as the CPU is shared. The outputs of the modes are compared
(greedy tokens equal, logits max diff).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from rich.table import Table

from llm_internals.console import console
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_layout import kv_layout
from llm_internals.models import DecoderLM, ModelConfig

WIDTH = dict(vocab_size=256, d_model=256, n_layers=4, n_heads=8, max_seq_len=2048,
             attn_impl="sdpa", fused_ops=True)  # fmt: skip
MLA = dict(kv_lora_rank=128, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
           q_lora_rank=None)  # fmt: skip


def set_mla_mode(model: DecoderLM, mode: str) -> DecoderLM:
    """`model` with every MLA block switched to "auto", "naive" or "absorbed" (same weights)."""
    model.set_mla_mode(mode)
    return model


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms of this process's CPU time per call of each fn over alternating rounds, after
    one warm-up call each (CPU time: on a shared CPU the wall time mostly measures the wait for
    a core)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            samples[name].append(time.process_time() - start)
    return {name: 1000 * statistics.median(s) for name, s in samples.items()}


def decode_ms_per_token(models: dict[str, Callable[[], DecoderLM]], prompt: list[int], new: int,
                        rounds: int) -> dict[str, float]:  # fmt: skip
    """(t(new) - t(1)) / (new - 1) for greedy generate, per variant; `models` maps a name to a
    function that returns the model ready to run (e.g. after switching its mode)."""

    def run(name: str, n: int) -> Callable[[], object]:
        return lambda: generate(models[name](), None, prompt, max_new_tokens=n, eos_token_id=None)

    long = interleaved({name: run(name, new) for name in models}, rounds)
    short = interleaved({name: run(name, 1) for name in models}, rounds)
    return {name: (long[name] - short[name]) / (new - 1) for name in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--prompt-len", type=int, default=256, help="decode prompt (default 256)")
    parser.add_argument("--new-tokens", type=int, default=48, help="decoded tokens (default 48)")
    parser.add_argument("--prefill-len", type=int, default=512, help="prefill tokens (default 512)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mla = DecoderLM(ModelConfig(**WIDTH, mla=MLA)).eval()
    others = {"MHA (8 KV heads)": DecoderLM(ModelConfig(**WIDTH)).eval(),
              "GQA (2 KV heads)": DecoderLM(ModelConfig(**WIDTH, n_kv_heads=2)).eval()}  # fmt: skip
    prompt = torch.randint(0, 256, (args.prompt_len,)).tolist()
    ids = torch.randint(0, 256, (1, args.prefill_len))
    before = os.getloadavg()
    with torch.no_grad():
        runners = {f"MLA {m}": (lambda m=m: set_mla_mode(mla, m)) for m in ("naive", "absorbed")}
        runners |= {name: (lambda model=model: model) for name, model in others.items()}
        decode = decode_ms_per_token(runners, prompt, args.new_tokens, args.rounds)
        tokens = {m: generate(set_mla_mode(mla, m), None, prompt, max_new_tokens=16,
                              eos_token_id=None).token_ids
                  for m in ("naive", "absorbed")}  # fmt: skip
        prefill = interleaved({m: lambda m=m: set_mla_mode(mla, m)(ids)
                               for m in ("naive", "absorbed")}, args.rounds)  # fmt: skip
        diff = (set_mla_mode(mla, "naive")(ids) - set_mla_mode(mla, "absorbed")(ids)).abs().max()
    load = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(before, os.getloadavg(), strict=True))
    table = Table(title=f"decode, batch 1, prompt {args.prompt_len}, {args.new_tokens} new "
                  f"tokens, {args.threads} thread(s), CPU ms; load average before/after "
                  f"{load}")  # fmt: skip
    for column in ("variant", "KV values/token/layer", "ms/token", "tokens/s"):
        table.add_column(column, justify="right")
    layouts = {"MLA naive": mla.config, "MLA absorbed": mla.config}
    layouts |= {name: model.config for name, model in others.items()}
    for name, ms in decode.items():
        values = kv_layout(layouts[name]).values_per_token
        table.add_row(name, str(values), f"{ms:.2f}", f"{1000 / ms:,.0f}")
    console.print(table)
    same = tokens["naive"] == tokens["absorbed"]
    console.print(f"prefill of {args.prefill_len} tokens, no cache: naive {prefill['naive']:.1f}"
                  f" ms, absorbed {prefill['absorbed']:.1f} ms (CPU); logits max |naive - "
                  f"absorbed| = {diff:.1e}; greedy tokens equal: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
