"""Forward-pass speed of our EncoderLM (BERT) and Seq2SeqLM (Marian) against HF transformers.

Measures: a forward pass (fp32, no grad) of a BERT-base-shaped BertForMaskedLM (batch 8 x 128
tokens) and an opus-mt-en-de-shaped MarianMTModel (batch 8, 64 source and 64 target tokens),
random weights, with our from-scratch path ("ours scratch": attention, norms and activations
written out) and our fast path ("ours fast": SDPA attention, fused norm/activation kernels),
next to HF with eager and with sdpa attention, all on the same saved weights.

Method as benchmarks/model_forward.py: runs are interleaved with a rotating order, the median of
the repetitions is reported, and each variant's logits are first checked against HF sdpa.
Ratio = HF time / our time (> 1: ours is faster).

    .venv/bin/python benchmarks/encdec_forward.py [--reps 7] [--models bert-base marian-en-de]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from llm_internals.models import load_pretrained


def hf_model(name: str):
    """(HF model class, config, make_inputs(batch) -> dict of HF keyword inputs)."""
    import transformers

    if name == "bert-base":
        config = transformers.BertConfig()  # the defaults are bert-base-uncased's shape
        return (
            transformers.BertForMaskedLM,
            config,
            lambda batch: {
                "input_ids": torch.randint(0, config.vocab_size, (batch, 128)),
                "attention_mask": torch.ones(batch, 128, dtype=torch.long),
            },
        )
    if name == "marian-en-de":
        config = transformers.MarianConfig(
            vocab_size=58101,
            d_model=512,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=8,
            decoder_attention_heads=8,
            encoder_ffn_dim=2048,
            decoder_ffn_dim=2048,
            activation_function="swish",
            scale_embedding=True,
            max_position_embeddings=512,
            pad_token_id=58100,
            decoder_start_token_id=58100,
        )
        return (
            transformers.MarianMTModel,
            config,
            lambda batch: {
                "input_ids": torch.randint(0, 58100, (batch, 64)),
                "attention_mask": torch.ones(batch, 64, dtype=torch.long),
                "decoder_input_ids": torch.randint(0, 58100, (batch, 64)),
            },
        )
    raise SystemExit(f"unknown model {name!r}")


def ours_call(model, inputs: dict) -> Callable[[], torch.Tensor]:
    if "decoder_input_ids" in inputs:
        return lambda: model(
            inputs["input_ids"], inputs["decoder_input_ids"], src_mask=inputs["attention_mask"]
        )
    return lambda: model(inputs["input_ids"], attention_mask=inputs["attention_mask"])


def bench_model(name: str, reps: int, batch: int, console: Console) -> list[tuple]:
    model_class, config, make_inputs = hf_model(name)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_class(config).save_pretrained(tmp)
        ours = {
            "ours scratch": load_pretrained(tmp, attn_impl="scratch"),
            "ours fast": load_pretrained(tmp, attn_impl="sdpa", fused_ops=True),
        }
        hf = {
            f"HF {impl}": model_class.from_pretrained(tmp, attn_implementation=impl).eval()
            for impl in ("eager", "sdpa")
        }
    inputs = make_inputs(batch)
    calls = {label: ours_call(model, inputs) for label, model in ours.items()}
    calls |= {
        label: (lambda m=m: m(**inputs, use_cache=False).logits)
        if "decoder_input_ids" in inputs
        else (lambda m=m: m(**inputs).logits)
        for label, m in hf.items()
    }
    with torch.inference_mode():
        reference = calls["HF sdpa"]()
        for label, call in calls.items():  # warm-up, and a parity check on these weights
            diff = (call() - reference).abs().max().item()
            console.print(f"{name} {label}: max |logits - HF sdpa| = {diff:.2e}")
        times: dict[str, list[float]] = {label: [] for label in calls}
        labels = list(calls)
        for rep in range(reps):
            for label in labels[rep % len(labels) :] + labels[: rep % len(labels)]:
                start = time.perf_counter()
                calls[label]()
                times[label].append(time.perf_counter() - start)
    median = {label: statistics.median(t) for label, t in times.items()}
    pairs = (("ours scratch", "HF eager"), ("ours scratch", "HF sdpa"), ("ours fast", "HF sdpa"))
    return [(name, o, median[o], r, median[r], median[r] / median[o]) for o, r in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["bert-base", "marian-en-de"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    console = Console()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch {args.batch}, "
        f"median of {args.reps} interleaved runs"
    )
    table = Table(title="Encoder / encoder-decoder forward: ours vs HF transformers")
    for column in ("model", "ours", "ours s", "reference", "ref s", "ratio ref/ours"):
        table.add_column(column, justify="right" if column.endswith(("s", "ours")) else "left")
    for name in args.models:
        for model, ours, t_ours, ref, t_ref, ratio in bench_model(
            name, args.reps, args.batch, console
        ):
            table.add_row(model, ours, f"{t_ours:.3f}", ref, f"{t_ref:.3f}", f"{ratio:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
