"""Speed on one device (a GPU, or the CPU): decode, serving and training, each beside a reference
measured in the same run, interleaved (ours, reference, ours, ...; median of the repetitions).

    python benchmarks/on_device.py --device cuda [--reps 3] [--quick] [--out FILE.json]

- decode: greedy decode of a GPT-2-124M-shaped random model, batch 1 and batch 16, in float32
  and bfloat16: our `generate` (contiguous KV cache, SDPA, fused ops) against HF transformers
  `generate` on the same weights. Rate = rows * (N - 1) / (t(N new tokens) - t(1 new token)),
  so prefill and setup cancel. "same tokens": both greedy paths agree on 8 tokens (random
  weights have near ties, so a NO in bfloat16 is rounding, not a bug; float32 should say yes).
- serving: REQUESTS requests of random prompt and answer lengths through the paged engine
  (continuous batching, one forward per step for every running sequence) against the same
  requests through our contiguous-cache `generate` in static batches of 16 (each batch runs
  until its longest answer is done). Useful tokens/s = requested answer tokens / seconds.
- training: tokens/s of whole training steps (forward, loss, backward, AdamW) for our DecoderLM
  with our AdamW and cross_entropy_fast against HF's GPT2LMHeadModel with torch.optim.AdamW and
  F.cross_entropy, same weights and batches, bf16 autocast on a GPU; both losses must fall.

GPU work is asynchronous: every timed region ends with a device synchronize. `--quick` uses a
tiny model (for the CPU test of this script), not figures to report.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from rich.console import Console
from rich.table import Table

from llm_internals.devices import describe_device, resolve_device, synchronize
from llm_internals.files import write_json
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.models import load_pretrained
from llm_internals.training.adamw import AdamW
from llm_internals.training.loss import cross_entropy_fast

console = Console(highlight=False, width=160)
FULL = dict(config={}, decode_new=64, prompt=16, requests=64, prompt_range=(16, 256),
            answer_range=(16, 128), train_batch=(16, 256), train_steps=20)  # fmt: skip
QUICK = dict(config=dict(n_embd=64, n_layer=2, n_head=2, vocab_size=512, n_positions=256,
                         bos_token_id=0, eos_token_id=0),
             decode_new=6, prompt=8, requests=6, prompt_range=(4, 24), answer_range=(3, 8),
             train_batch=(2, 32), train_steps=2)  # fmt: skip


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def load_pair(size: dict, device: torch.device, dtype: torch.dtype):
    """(ours, HF) with the same random GPT-2 weights, on `device` in `dtype`, eval mode."""
    torch.manual_seed(0)
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # as ours
    config = transformers.GPT2Config(**no_dropout, **size["config"])
    hf = transformers.GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_pretrained(Path(tmp), attn_impl="sdpa", fused_ops=True)
    return ours.to(device=device, dtype=dtype).eval(), hf.to(device=device, dtype=dtype).eval()


def ours_generate(model, prompts: torch.Tensor, new: int) -> list[list[int]]:
    results = generate(model, None, prompts.tolist(), max_new_tokens=new, eos_token_id=None)
    return [r.token_ids for r in results]


def hf_generate(model, prompts: torch.Tensor, new: int) -> list[list[int]]:
    with torch.inference_mode():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, use_cache=True,
                             pad_token_id=0)  # fmt: skip
    return out[:, prompts.shape[1] :].tolist()


def decode_rates(ours, hf, prompts: torch.Tensor, new: int, reps: int, device) -> dict:
    """Median decode tokens/s of ours and HF, interleaved: rows * (new - 1) / (t(new) - t(1))."""
    runners = {"ours": lambda n: ours_generate(ours, prompts, n),
               "hf": lambda n: hf_generate(hf, prompts, n)}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            long, short = timed(lambda r=run: r(new), device), timed(lambda r=run: r(1), device)
            seconds[name].append(max(long - short, 1e-9))
    return {name: len(prompts) * (new - 1) / statistics.median(v) for name, v in seconds.items()}


def decode_part(size: dict, device: torch.device, dtypes: list[torch.dtype], reps: int) -> list:
    rows = []
    for dtype in dtypes:
        ours, hf = load_pair(size, device, dtype)
        gen = torch.Generator().manual_seed(1)
        for batch in (1, 16):
            prompts = torch.randint(0, ours.config.vocab_size, (batch, size["prompt"]),
                                    generator=gen).to(device)  # fmt: skip
            same = ours_generate(ours, prompts, 8) == hf_generate(hf, prompts, 8)
            rate = decode_rates(ours, hf, prompts, size["decode_new"], reps, device)
            rows.append(dict(dtype=str(dtype).removeprefix("torch."), batch=batch,
                             ours_tokens_per_s=rate["ours"], hf_tokens_per_s=rate["hf"],
                             ratio=rate["ours"] / rate["hf"], same_tokens=same))  # fmt: skip
    return rows


def serving_part(size: dict, device: torch.device, dtype: torch.dtype, reps: int) -> dict:
    ours, _ = load_pair(size, device, dtype)
    gen = torch.Generator().manual_seed(2)
    vocab = ours.config.vocab_size
    requests = []
    for _ in range(size["requests"]):
        length = int(torch.randint(*size["prompt_range"], (1,), generator=gen))
        answer = int(torch.randint(*size["answer_range"], (1,), generator=gen))
        requests.append((torch.randint(0, vocab, (length,), generator=gen).tolist(), answer))
    useful = sum(m for _, m in requests)

    def paged() -> list[list[int]]:
        llm = LLM(ours, None, block_size=16, max_num_seqs=len(requests),
                  max_num_batched_tokens=2048)  # fmt: skip
        params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for _, m in requests]
        return [o.token_ids for o in llm.generate([p for p, _ in requests], params)]

    def static() -> list[list[int]]:
        out = []
        for start in range(0, len(requests), 16):
            group = requests[start : start + 16]
            results = generate(ours, None, [p for p, _ in group], eos_token_id=None,
                               max_new_tokens=max(m for _, m in group))  # fmt: skip
            out += [r.token_ids[:m] for r, (_, m) in zip(results, group, strict=True)]
        return out

    matches = sum(a == b for a, b in zip(paged(), static(), strict=True))  # also warms up
    seconds: dict[str, list[float]] = {"paged": [], "static": []}
    for _ in range(reps):
        seconds["paged"].append(timed(paged, device))
        seconds["static"].append(timed(static, device))
    rate = {k: useful / statistics.median(v) for k, v in seconds.items()}
    return dict(dtype=str(dtype).removeprefix("torch."), requests=len(requests),
                useful_tokens=useful, paged_tokens_per_s=rate["paged"],
                static_tokens_per_s=rate["static"], ratio=rate["paged"] / rate["static"],
                same_greedy_tokens=f"{matches}/{len(requests)}")  # fmt: skip


def training_part(size: dict, device: torch.device, reps: int) -> dict:
    ours, hf = load_pair(size, device, torch.float32)
    ours.train()
    hf.train()
    batch, length = size["train_batch"]
    gen = torch.Generator().manual_seed(3)
    data = torch.randint(0, ours.config.vocab_size, (batch, length + 1), generator=gen).to(device)
    ids, targets = data[:, :-1], data[:, 1:]
    autocast = device.type == "cuda"
    sides = {
        "ours": (ours, AdamW(ours.parameters(), lr=3e-4, weight_decay=0.0),
                 lambda logits: cross_entropy_fast(logits.float(), targets)),
        "hf": (hf, torch.optim.AdamW(hf.parameters(), lr=3e-4, weight_decay=0.0),
               lambda logits: F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())),
    }  # fmt: skip
    losses: dict[str, list[float]] = {"ours": [], "hf": []}

    def steps(name: str, n: int) -> None:
        model, optimizer, loss_fn = sides[name]
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(ids) if name == "ours" else model(ids).logits
            loss = loss_fn(logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())

    for name in sides:
        steps(name, 1)  # warm-up (kernels, optimizer state)
    seconds: dict[str, list[float]] = {"ours": [], "hf": []}
    for _ in range(reps):
        for name in sides:
            seconds[name].append(timed(lambda n=name: steps(n, size["train_steps"]), device))
    rate = {k: batch * length * size["train_steps"] / statistics.median(v)
            for k, v in seconds.items()}  # fmt: skip
    return dict(autocast="bfloat16" if autocast else "off", batch=f"{batch} x {length}",
                ours_tokens_per_s=rate["ours"], hf_tokens_per_s=rate["hf"],
                ratio=rate["ours"] / rate["hf"], ours_loss=(losses["ours"][0], losses["ours"][-1]),
                hf_loss=(losses["hf"][0], losses["hf"][-1]))  # fmt: skip


def show(results: dict) -> None:
    decode = Table(
        title=f"decode on {results['device']} (tokens/s, all rows)", title_justify="left"
    )
    for column in ("dtype", "batch", "ours", "HF generate", "ours / HF", "same tokens"):
        decode.add_column(column, justify="right")
    for r in results["decode"]:
        decode.add_row(r["dtype"], str(r["batch"]), f"{r['ours_tokens_per_s']:.0f}",
                       f"{r['hf_tokens_per_s']:.0f}", f"{r['ratio']:.2f}x",
                       "yes" if r["same_tokens"] else "NO")  # fmt: skip
    console.print(decode)
    s = results["serving"]
    serving = Table(title=f"serving {s['requests']} requests, {s['dtype']} (useful tokens/s)",
                    title_justify="left")  # fmt: skip
    for column in ("paged engine", "static batches of 16", "paged / static", "same tokens"):
        serving.add_column(column, justify="right")
    serving.add_row(f"{s['paged_tokens_per_s']:.0f}", f"{s['static_tokens_per_s']:.0f}",
                    f"{s['ratio']:.2f}x", s["same_greedy_tokens"])  # fmt: skip
    console.print(serving)
    t = results["training"]
    training = Table(title=f"training steps, batch {t['batch']}, autocast {t['autocast']} "
                     "(tokens/s)", title_justify="left")  # fmt: skip
    for column in ("ours", "HF + torch AdamW", "ours / HF", "ours loss", "HF loss"):
        training.add_column(column, justify="right")
    training.add_row(f"{t['ours_tokens_per_s']:.0f}", f"{t['hf_tokens_per_s']:.0f}",
                     f"{t['ratio']:.2f}x", "{:.3f} -> {:.3f}".format(*t["ours_loss"]),
                     "{:.3f} -> {:.3f}".format(*t["hf_loss"]))  # fmt: skip
    console.print(training)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; the median is shown")
    parser.add_argument("--quick", action="store_true", help="a tiny model (tests this script)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    size = QUICK if args.quick else FULL
    half = torch.bfloat16 if device.type != "cpu" or args.quick else torch.float32
    dtypes = [torch.float32] if half == torch.float32 else [torch.float32, half]
    started = time.perf_counter()
    results = dict(device=describe_device(device), torch=torch.__version__,
                   transformers=transformers.__version__, quick=args.quick,
                   decode=decode_part(size, device, dtypes, args.reps),
                   serving=serving_part(size, device, half, args.reps),
                   training=training_part(size, device, args.reps))  # fmt: skip
    results["seconds"] = time.perf_counter() - started
    show(results)
    console.print(f"took {results['seconds']:.0f} s")
    if args.out is not None:
        write_json(args.out, results)
    losses = results["training"]
    return 0 if losses["ours_loss"][1] < losses["ours_loss"][0] else 1


if __name__ == "__main__":
    raise SystemExit(main())
