"""Quantization: weight bytes, validation perplexity per scheme, and decode speed of int8/int4
weight-only models against fp32 and bf16, with torchao's weight-only int8 as the reference.

Claims (issue 16): int8 weight-only decode >= 2x our fp32 decode at batch 1, int4 (g128) >= 3x;
perplexity within 1% (int8) and 5% (int4-g128) of fp32.

Method
- Tour-size model: --tour-model PATH (the tour's out/tour/model) or, when absent, a tour-shaped
  GPT (4 layers, d_model 128) trained here for --train-steps steps on Shakespeare with the
  project's Trainer and a 2048-token BPE. Perplexity: windows of 64 tokens over the first
  --eval-tokens tokens of the validation split (the last 10% of the text), every scheme applied
  to the same fp32 weights, computed in fp32 (the general dequantise-then-matmul path: exactly
  the values the scheme stores).
- GPT-2-small-shaped model (models/published.py "gpt2-124m", random weights: no download): weight
  bytes and decode speed (its perplexity would measure nothing).
- Decode tokens/s: our `generate` (greedy, KV cache), (time for N new tokens - time for 1) /
  (N - 1), batch 1 and 16, 16-token random prompts; variants interleaved per repetition, median
  reported. fp32 uses the decode layout (column-major weights, our fastest fp32); bf16, int8 and
  int4 keep the model in fp32 but round each quantised layer's input to bf16 for torch's
  int8/int4 CPU kernels (use_kernel_activations; they are slow with fp32 inputs), the output head
  in int8 (quantize_output_head); bf16 = the whole model in bf16; torchao = torchao's
  Int8WeightOnlyConfig on the bf16 model (its head stays bf16: OutputHead is not an nn.Linear).
- One torch thread by default (the machine is shared; see benchmarks/decode.py).

    .venv/bin/python benchmarks/quantization.py [--quick] [--tour-model out/tour/model]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from llm_internals.commands.perplexity import mean_token_loss
from llm_internals.data.corpus import corpus
from llm_internals.data.split import train_val_split
from llm_internals.inference.decode_layout import use_decode_layout
from llm_internals.inference.generate import generate
from llm_internals.models.checkpoint import own_state_dict
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.models.published import model_config
from llm_internals.quant.linear import quantize_model, quantize_output_head, use_kernel_activations
from llm_internals.quant.schemes import SCHEMES

console = Console(highlight=False, width=160)
FIGURE = Path("docs/figures/quantization_perplexity.png")
SPEED_VARIANTS = ["fp32", "bf16", "int8", "int4-g128", "torchao-int8"]


def train_tour_model(steps: int):
    """A tour-shaped model and tokenizer trained here (when no tour model is given)."""
    from llm_internals.tokenizer import train_bpe
    from llm_internals.tour.training import TOUR_CONFIG
    from llm_internals.training.data import build_splits
    from llm_internals.training.trainer import Trainer, build_model

    train_text, val_text = train_val_split(corpus("shakespeare"))
    tokenizer = train_bpe(train_text[:400_000], 2048, special_tokens=("<|endoftext|>",))
    work = Path(tempfile.mkdtemp(prefix="quant-bench-"))
    config = TOUR_CONFIG.replace(out_dir=str(work / "run"), max_steps=steps, max_minutes=10.0,
                                 warmup_steps=max(1, steps // 10), eval_interval=steps,
                                 log_interval=max(1, steps // 5))  # fmt: skip
    splits = build_splits(train_text, val_text, tokenizer, work / "data")
    model = build_model(config, tokenizer.vocab_size)
    Trainer(config, model, tokenizer, splits, run_dir=config.out_dir, console=console).train()
    return model.float().eval(), tokenizer


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in own_state_dict(model).values())


def perplexity_table(model, tokenizer, eval_tokens: int, schemes: list[str]) -> dict[str, tuple]:
    """{scheme: (weight bytes, perplexity)} on the validation split, fp32 computation."""
    val = train_val_split(corpus("shakespeare"))[1]
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode
    ids = torch.tensor(encode(val)[:eval_tokens])
    results = {}
    for scheme in ["fp32", *schemes]:
        variant = copy.deepcopy(model)
        if scheme != "fp32":
            quantize_model(variant, scheme)
        loss, _ = mean_token_loss(variant, ids, 64, batch_size=16)
        results[scheme] = (weight_bytes(variant), math.exp(loss))
        console.print(f"  {scheme:>14}: perplexity {results[scheme][1]:.3f}")
    return results


def speed_variants(model: DecoderLM, names: list[str]) -> dict[str, torch.nn.Module]:
    variants = {}
    for name in names:
        variant = copy.deepcopy(model)
        if name == "fp32":
            variants[name] = use_decode_layout(variant)
        elif name == "bf16":
            variants[name] = use_decode_layout(variant.to(torch.bfloat16))
        elif name == "torchao-int8":
            try:
                from torchao.quantization import Int8WeightOnlyConfig, quantize_
            except ImportError:
                console.print("[yellow]torchao is not installed: no reference row[/yellow]")
                continue
            variant = variant.to(torch.bfloat16)
            quantize_(variant, Int8WeightOnlyConfig())
            variants[name] = variant
        else:  # the head in int8 (the int4 kernel needs N % 16 == 0; GPT-2's vocab is 50257)
            quantize_model(variant, name)
            quantize_output_head(variant, "int8")
            use_kernel_activations(variant, torch.bfloat16)
            variants[name] = variant
    return variants


def decode_rates(variants: dict, batch: int, new: int, reps: int, vocab: int) -> dict[str, float]:
    """Median decode tokens/s (all rows) per variant, interleaved."""
    prompts = torch.randint(0, vocab, (batch, 16), generator=torch.Generator().manual_seed(0))
    prompt_list = prompts.tolist()

    def run(model, n):
        generate(model, None, prompt_list, max_new_tokens=n, eos_token_id=None)

    samples: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model in variants.values():  # warm up (kernel weight packing, allocator)
            run(model, 2)
        for _ in range(reps):
            for name, model in variants.items():
                start = time.perf_counter()
                run(model, new)
                long = time.perf_counter() - start
                start = time.perf_counter()
                run(model, 1)
                samples[name].append(long - (time.perf_counter() - start))
    return {name: batch * (new - 1) / statistics.median(v) for name, v in samples.items()}


def speed_table(title: str, model: DecoderLM, args) -> None:
    variants = speed_variants(model, SPEED_VARIANTS)
    table = Table(title=f"{title}: decode tokens/s (load average {os.getloadavg()[0]:.1f})",
                  title_justify="left")  # fmt: skip
    table.add_column("variant")
    table.add_column("weight MiB", justify="right")
    for batch in args.batches:
        table.add_column(f"batch {batch} tok/s", justify="right")
        table.add_column(f"x fp32 (b{batch})", justify="right")
    rates = {b: decode_rates(variants, b, args.new_tokens, args.reps, model.config.vocab_size)
             for b in args.batches}  # fmt: skip
    for name, variant in variants.items():
        row = [name, f"{weight_bytes(variant) / 2**20:,.1f}" if name != "torchao-int8" else "-"]
        for b in args.batches:
            row += [f"{rates[b][name]:,.1f}", f"{rates[b][name] / rates[b]['fp32']:.2f}"]
        table.add_row(*row)
    console.print(table)


def write_figure(results: dict[str, tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["fp32"][1]
    names = [n for n in results if n != "fp32"]
    deltas = [100 * (results[n][1] / base - 1) for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(names, deltas, color=["tab:red" if d > 5 else "tab:blue" for d in deltas])
    ax.set_ylabel("perplexity vs fp32 (%)")
    ax.set_title(f"Weight quantisation, tour-size model (fp32 perplexity {base:.2f})")
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.axhline(5, color="gray", lw=0.8, ls=":")
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    console.print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run: 60 training steps, 4096 eval tokens, batch 1 only, "
        "1 repetition, no GPT-2-shaped decode",
    )
    parser.add_argument(
        "--tour-model",
        type=Path,
        default=Path("out/tour/model"),
        help="a trained tour model folder (trained here when it does not exist)",
    )
    parser.add_argument("--train-steps", type=int, default=300, help="steps when training here")
    parser.add_argument("--eval-tokens", type=int, default=32_768, help="validation tokens scored")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per decode run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="perplexity figure to write")
    args = parser.parse_args()  # fmt: skip
    if args.quick:
        args.train_steps, args.eval_tokens, args.reps, args.new_tokens = 60, 4096, 1, 12
    args.batches = [1] if args.quick else [1, 16]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console.print(f"torch {torch.__version__}, {args.threads} thread(s), load average "
                  f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    if (args.tour_model / "config.json").exists():
        model, tokenizer, _ = load_model_and_tokenizer(args.tour_model)
        source = str(args.tour_model)
    else:
        model, tokenizer = train_tour_model(args.train_steps)
        source = f"tour-shaped, trained here for {args.train_steps} steps"
    console.print(f"tour-size model: {source}")
    schemes = [s for s in SCHEMES if s != "fp8-e4m3-b128" or model.config.d_model % 128 == 0]
    results = perplexity_table(model, tokenizer, args.eval_tokens, schemes)
    base_bytes, base_ppl = results["fp32"]
    table = Table(title="tour-size model: weights and validation perplexity", title_justify="left")
    for column in ("scheme", "weight KiB", "x smaller", "perplexity", "vs fp32"):
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for name, (size, ppl) in results.items():
        table.add_row(name, f"{size / 1024:,.0f}", f"{base_bytes / size:.2f}", f"{ppl:.3f}",
                      f"{100 * (ppl / base_ppl - 1):+.2f}%")  # fmt: skip
    console.print(table)
    write_figure(results, args.figure)
    speed_table("tour-size model", model, args)
    torch.manual_seed(0)
    speed_table(
        "GPT-2-small-shaped (random weights)", DecoderLM(model_config("gpt2-124m")).eval(), args
    )


if __name__ == "__main__":
    main()
