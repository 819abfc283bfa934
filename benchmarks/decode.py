"""Decode speed: our generate (contiguous KV cache) against HF transformers generate.

Claims (issue 6): batch-1 greedy decode with the cache is at least 1.3x HF `generate`
(use_cache=True) on the same random fp32 weights, and reaches at least 85% of the memory-bandwidth
limit; the cache turns O(n^2) generation into O(n); batch 16 throughput against HF batch 16.

Method
- Models: a GPT-2-124M-shaped and a SmolLM-135M-shaped random HF model, saved with
  save_pretrained and loaded into ours (fast path: sdpa attention, fused norms/activations,
  `use_decode_layout`: weights stored column-major so the BLAS runs its faster plain GEMV).
  "same tokens" checks that both produce the same greedy tokens on the benchmarked prompts.
- Decode tokens/s, both sides measured the same way from wall time of whole generate calls:
  (time for N new tokens - time for 1 new token) / (N - 1), so prefill and setup cancel.
  Runs are interleaved (ours, HF, ours, ...) and the median of the repetitions is reported,
  by wall time and by this process's CPU time (on a shared CPU the process waits for a core;
  CPU time is close to what a dedicated core would take).
- Bandwidth limit: at batch 1 every weight is read once per token, so
  limit tokens/s = copy bandwidth / weight bytes read per token. Copy bandwidth is measured here,
  now: a 256 MiB tensor copy, (bytes read + bytes written) / time, best of several. Weight bytes
  count each tensor once (a tied embedding is the output head) and leave out tables that are
  only indexed (learned positions, an untied input embedding: one row per token).
- Growth table: a small model (the tour's size), 1-token prompt, N = 64/256/1024 new tokens,
  cached vs uncached; per-token time should stay flat with the cache and grow ~linearly without.
- One torch thread by default: on a CPU shared with other work, every multi-threaded op waits for
  a descheduled worker thread, which swamps what is compared (see benchmarks/sampling.py).

    .venv/bin/python benchmarks/decode.py [--reps 3] [--threads 1] [--new-tokens 48]
        [--skip-growth] [--skip-batch]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from rich.console import Console
from rich.table import Table

from llm_internals.inference.decode_layout import use_decode_layout
from llm_internals.inference.generate import generate
from llm_internals.models import DecoderLM, ModelConfig, load_pretrained
from llm_internals.models.published import hf_config

console = Console(highlight=False, width=200)
PROMPT_LEN = 16


def hf_random(name: str) -> transformers.PreTrainedModel:
    """A random fp32 HF model with a published shape (models/published.py)."""
    config = transformers.AutoConfig.for_model(**hf_config(name))
    return getattr(transformers, config.architectures[0])(config)


def hf_gpt2() -> transformers.PreTrainedModel:
    return hf_random("gpt2-124m")


def hf_smollm() -> transformers.PreTrainedModel:
    return hf_random("smollm-135m")


MODELS: dict[str, Callable[[], transformers.PreTrainedModel]] = {
    "GPT-2-124M": hf_gpt2,
    "SmolLM-135M": hf_smollm,
}


def copy_bandwidth(mib: int = 256, reps: int = 7) -> float:
    """Bytes moved per second (read + write) by a large tensor copy; the best of `reps`."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_time(lambda: dst.copy_(src)) for _ in range(reps))
    return 2 * src.numel() * 4 / best


def weight_bytes_per_token(model: DecoderLM) -> int:
    """Bytes of every weight a batch-1 decode step reads in full (each shared tensor once)."""
    lookup_only = set()
    if model.pos_emb is not None:
        lookup_only |= {id(p) for p in model.pos_emb.parameters()}
    if not model.lm_head.is_tied_to(model.tok_emb):
        lookup_only.add(id(model.tok_emb.weight))
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in lookup_only:
            continue
        seen.add(id(p))
        total += p.numel() * p.element_size()
    return total


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _wall_and_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (on a shared CPU the process also waits
    for a core; CPU time approximates what a dedicated core would take)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ours_generate(model: DecoderLM, prompts: torch.Tensor, new: int, use_cache: bool = True):
    return generate(model, None, prompts.tolist(), max_new_tokens=new, eos_token_id=None,
                    use_cache=use_cache)  # fmt: skip


def hf_generate(model, prompts: torch.Tensor, new: int):
    with torch.inference_mode():
        return model.generate(
            prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0,
        )  # fmt: skip


def decode_rates(ours: DecoderLM, hf, prompts: torch.Tensor, new: int, reps: int) -> dict:
    """Median decode tokens/s (all rows together), by wall and by CPU time, ours and HF,
    interleaved: {"ours": (wall rate, cpu rate), "hf": (...)}."""
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "hf": []}
    runners = {
        "ours": lambda n: ours_generate(ours, prompts, n),
        "hf": lambda n: hf_generate(hf, prompts, n),
    }
    for _ in range(reps):
        for name, run in runners.items():
            long_wall, long_cpu = _wall_and_cpu(lambda r=run: r(new))
            short_wall, short_cpu = _wall_and_cpu(lambda r=run: r(1))
            samples[name].append((long_wall - short_wall, long_cpu - short_cpu))
    rates = {}
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values) / (new - 1)
        cpu = statistics.median(v[1] for v in values) / (new - 1)
        rates[name] = (prompts.shape[0] / wall, prompts.shape[0] / cpu)
    return rates


def check_same_tokens(ours: DecoderLM, hf, prompts: torch.Tensor, new: int) -> bool:
    mine = [r.token_ids for r in ours_generate(ours, prompts, new)]
    theirs = hf_generate(hf, prompts, new)[:, prompts.shape[1] :].tolist()
    return mine == theirs


def model_rows(name: str, reps: int, new: int, bandwidth: float, do_batch: bool) -> list[list]:
    torch.manual_seed(0)
    hf = MODELS[name]().eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = use_decode_layout(load_pretrained(Path(tmp), attn_impl="sdpa", fused_ops=True))
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, ours.config.vocab_size, (1, PROMPT_LEN), generator=gen)
    wbytes = weight_bytes_per_token(ours)
    limit = bandwidth / wbytes
    cases = [("batch 1", prompt, new)]
    if do_batch:
        prompts = torch.randint(0, ours.config.vocab_size, (16, PROMPT_LEN), generator=gen)
        cases.append(("batch 16", prompts, max(8, new // 2)))
    rows = []
    for label, ids, n in cases:
        same = check_same_tokens(ours, hf, ids, 8)
        rates = decode_rates(ours, hf, ids, n, reps)
        (o_wall, o_cpu), (h_wall, h_cpu) = rates["ours"], rates["hf"]
        at_limit = label == "batch 1"
        rows.append([
            name, label, f"{o_wall:.1f}", f"{h_wall:.1f}", f"{o_wall / h_wall:.2f}x",
            f"{o_cpu:.1f}", f"{h_cpu:.1f}", f"{o_cpu / h_cpu:.2f}x",
            f"{wbytes / 1e6:.0f} MB" if at_limit else "", f"{limit:.1f}" if at_limit else "",
            f"{o_wall / limit:.0%} / {o_cpu / limit:.0%}" if at_limit else "",
            f"{h_wall / limit:.0%} / {h_cpu / limit:.0%}" if at_limit else "",
            "yes" if same else "NO",
        ])  # fmt: skip
    return rows


def growth_rows(reps: int) -> list[list]:
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=8192, d_model=128, n_layers=4, n_heads=4,
                                  max_seq_len=1100, position="learned", norm="layernorm",
                                  ffn="mlp", activation="gelu", tie_embeddings=True,
                                  attn_impl="sdpa", fused_ops=True)).eval()  # fmt: skip
    use_decode_layout(model)
    prompt = torch.tensor([[1]])
    rows = []
    for new in (64, 256, 1024):
        cached = statistics.median(
            _time(lambda n=new: ours_generate(model, prompt, n)) for _ in range(reps)
        )
        uncached = _time(lambda n=new: ours_generate(model, prompt, n, use_cache=False))
        rows.append([str(new), f"{cached:.2f}", f"{cached / new * 1e3:.2f}", f"{uncached:.2f}",
                     f"{uncached / new * 1e3:.2f}", f"{uncached / cached:.1f}x"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth()
    console.print(f"torch {torch.__version__}, {args.threads} thread(s); copy bandwidth "
                  f"{bandwidth / 1e9:.1f} GB/s (read + write)")  # fmt: skip

    table = Table(title="Greedy decode, fp32, random weights: tokens/s (median)",
                  title_justify="left")  # fmt: skip
    for col in ("model", "batch", "ours tok/s", "HF tok/s", "ours/HF", "ours tok/CPU-s",
                "HF tok/CPU-s", "ours/HF (CPU)", "weights/token", "limit tok/s",
                "ours % limit (wall/CPU)", "HF % limit (wall/CPU)", "same tokens"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "batch") else "right")
    for name in args.models:
        for row in model_rows(name, args.reps, args.new_tokens, bandwidth, not args.skip_batch):
            table.add_row(*row)
    console.print(table)

    if not args.skip_growth:
        growth = Table(title="Cached vs uncached, 4-layer d128 model, 1-token prompt (seconds)",
                       title_justify="left")  # fmt: skip
        for col in ("new tokens", "cached s", "ms/token", "uncached s", "ms/token", "speedup"):
            growth.add_column(col, justify="right")
        for row in growth_rows(args.reps):
            growth.add_row(*row)
        console.print(growth)


if __name__ == "__main__":
    main()
