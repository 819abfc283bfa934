"""`llm-internals quantize --model PATH --scheme NAME --out PATH`: write a quantised checkpoint
that `generate`, `serve` and `perplexity` load with `--model OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_internals.console import console, progress
from llm_internals.models.loading import find_tokenizer_file, load_model_and_tokenizer
from llm_internals.models.quantized_checkpoint import save_quantized_checkpoint
from llm_internals.quant.linear import count_linear_layers, quantize_model
from llm_internals.quant.schemes import SCHEMES, get_scheme


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="store a model's linear weights quantised (int8, int4, fp8, mxfp4, nvfp4, nf4, ...)",
        description="Quantise every linear layer of the attention and MLP blocks with --scheme "
        "and write a new checkpoint folder: the codes and their scales beside each weight "
        "(safetensors) and a 'quantization' block in config.json. Embeddings, norms and the "
        "output head stay in full precision. Schemes: "
        + "; ".join(f"{s.name}: {s.description}" for s in SCHEMES.values())
        + ". The folder is written atomically: nothing is left behind on an error.",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="checkpoint folder (ours or HF), training run or step folder",
    )
    p.add_argument(
        "--scheme",
        required=True,
        choices=list(SCHEMES),
        metavar="SCHEME",
        help=f"quantisation scheme, one of: {', '.join(SCHEMES)}",
    )
    p.add_argument("--out", type=Path, required=True, help="new folder to write (must not exist)")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer file to copy beside the weights (default: the model folder's)",
    )
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="module names to keep in full precision, e.g. blocks.0.attn.q_proj",
    )
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    scheme = get_scheme(args.scheme)
    model, _, _ = load_model_and_tokenizer(args.model, args.tokenizer, require_tokenizer=False)
    from llm_internals.models.loading import resolve_model_directory

    tokenizer_file = args.tokenizer or find_tokenizer_file(resolve_model_directory(args.model))
    before = _bytes(model)
    with progress(transient=True) as bar:
        task = bar.add_task(f"quantising to {scheme.name}", total=count_linear_layers(model))
        modules = quantize_model(model, scheme.name, tuple(args.skip), lambda _: bar.advance(task))
    save_quantized_checkpoint(model, scheme.name, modules, args.out, tokenizer_file)
    after = _bytes(model)
    console.print(
        f"wrote {args.out}: {len(modules)} linear layers in {scheme.name}; model tensors "
        f"{before / 2**20:,.2f} MiB -> {after / 2**20:,.2f} MiB"
    )
    return 0


def _bytes(model) -> int:
    from llm_internals.models.checkpoint import own_state_dict

    return sum(t.numel() * t.element_size() for t in own_state_dict(model).values())
