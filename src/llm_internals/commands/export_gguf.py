"""`llm-internals export-gguf --model PATH --out FILE --type f32|f16|q8_0`: a GGUF file of a
Llama-family model for llama.cpp and the tools built on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_internals.console import console, progress
from llm_internals.models.gguf_export import GGUF_TYPES, export_gguf, llama_tensors
from llm_internals.models.loading import load_model_and_tokenizer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export-gguf",
        help="write a Llama-family model and its tokenizer as a GGUF file (llama.cpp)",
        description="Write --model (a Llama-family checkpoint: RoPE, RMSNorm, gated MLP) and its "
        "byte-level BPE tokenizer as one GGUF file, with the tensor names, Q/K row order and "
        "metadata llama.cpp expects. Needs the gguf package (pip install 'llm-internals[gguf]').",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="checkpoint folder (ours or HF), training run or step folder",
    )
    p.add_argument("--out", type=Path, required=True, help="GGUF file to write")
    p.add_argument(
        "--type",
        default="f16",
        choices=GGUF_TYPES,
        help="matrix storage: f32, f16 or q8_0 (8-bit blocks of 32); norms stay f32",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer file (default: the model folder's tokenizer.json)",
    )
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    model, tokenizer, _ = load_model_and_tokenizer(args.model, args.tokenizer)
    total = len(llama_tensors(model))
    with progress(transient=True) as bar:
        task = bar.add_task(f"writing {args.type}", total=total)
        export_gguf(model, tokenizer, args.out, args.type, lambda _: bar.advance(task))
    console.print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:,.2f} MiB, {args.type})")
    return 0
