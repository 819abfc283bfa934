"""`llm-internals kv-memory CONFIG --tokens N --batch B`: the KV cache size of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich import box
from rich.table import Table

from llm_internals.console import console
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_memory import DTYPE_BYTES, KVShape, load_shape
from llm_internals.models import published

SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float8": "fp8"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "kv-memory",
        help="how much memory a model's KV cache needs for N tokens x B sequences",
        description="KV-cache bytes = 2 x layers x kv_heads x head_dim x tokens x batch x "
        "bytes_per_element; for MLA models (DeepSeek-V2/V3) layers x (kv_lora_rank + "
        "qk_rope_head_dim) x tokens x batch x bytes_per_element. CONFIG is any config the "
        "project or HF writes (a config.json, a checkpoint folder, a training run folder or one "
        "of its step-* folders), a published "
        f"model ({published.choices()}), or 'all' for every published decoder. Token counts "
        "accept a k suffix (4k = 4096, 128k = 131072). Published models also show their "
        "parameters, total and active per token (fewer for mixture-of-experts models).",
    )
    p.add_argument(
        "config",
        metavar="CONFIG",
        help="config.json, checkpoint/run/step folder, published model name or HF repo id, or "
        "'all'",
    )
    p.add_argument(
        "--tokens", nargs="+", default=["4k"], metavar="N", help="tokens per sequence (default 4k)"
    )
    p.add_argument("--batch", default=1, type=int, metavar="B", help="sequences (default 1)")
    p.add_argument(
        "--dtype", choices=sorted(DTYPE_BYTES), help="cache dtype (default: the config's dtype)"
    )
    p.set_defaults(func=run)


def parse_tokens(text: str) -> int:
    """'4096' -> 4096, '4k' -> 4096, '128K' -> 131072; anything else raises."""
    cleaned = text.strip().lower()
    scale = 1024 if cleaned.endswith("k") else 1
    digits = cleaned.removesuffix("k")
    if not digits.isdigit() or int(digits) <= 0:
        raise LLMInternalsError(
            f"--tokens: expected a positive integer such as 4096 or 4k, got {text!r}"
        )
    return int(digits) * scale


def compact_count(n: int) -> str:
    """4096 -> '4k', 131072 -> '128k', 1000 -> '1,000'."""
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n:,}"


def format_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1: '288 MiB', '1.25 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{n:,} B" if unit == "B" else f"{value:,.3g} {unit}"
        value /= 1024
    return f"{value:,.3g} TiB"


def run(args: argparse.Namespace) -> int:
    if args.batch <= 0:
        raise LLMInternalsError(f"--batch must be a positive integer, got {args.batch}")
    token_counts = [parse_tokens(t) for t in args.tokens]
    names = published.decoders() if args.config == "all" else [args.config]
    shapes = [load_shape(name, args.dtype) for name in names]
    formula = "2 x layers x kv_heads x d_head x tokens x batch x bytes"
    if any(shape.latent_dim is not None for shape in shapes):  # MLA rows cache a latent
        formula += "; MLA: layers x latent x tokens x batch x bytes"
    table = Table(
        title=f"KV cache for batch {args.batch}: {formula}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("model", no_wrap=True)
    for column in ("layers", "kv/heads", "d_head", "dtype", "/token"):
        table.add_column(column, justify="right", no_wrap=True)
    for tokens in token_counts:
        table.add_column(f"{compact_count(tokens)} tok", justify="right", no_wrap=True)
    for shape in shapes:
        table.add_row(*_row(shape, token_counts, args.batch))
    console.print(table)
    if len(shapes) == 1:
        shape, tokens = shapes[0], token_counts[-1]
        total = shape.cache_bytes(tokens, args.batch)
        per_layer = (
            f"2 x {shape.kv_heads} x {shape.head_dim}"
            if shape.latent_dim is None
            else f"{shape.latent_dim} (MLA latent)"
        )
        console.print(
            f"{shape.layers} x {per_layer} x {tokens:,} x {args.batch} x "
            f"{shape.bytes_per_element} = {total:,} bytes = {format_bytes(total)}"
        )
    print_parameters(names)
    return 0


def compact_params(n: int) -> str:
    """46_702_792_704 -> '46.7B', 124_439_808 -> '124M'."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def parameter_totals(name: str) -> tuple[int, int] | None:
    """(total, active per token) of a published model; None for local configs and models
    without a ModelConfig (Falcon)."""
    if Path(name).exists() or not published.is_published(name):
        return None
    try:
        return published.parameter_counts(name)["total"], published.active_parameters(name)
    except LLMInternalsError:
        return None


def print_parameters(names: list[str]) -> None:
    """The weights beside the cache: total and active parameters (fewer for mixture-of-experts
    models, whose tokens each run k of E experts), one line for one model, a table for more."""
    rows = [(name, totals) for name in names if (totals := parameter_totals(name)) is not None]
    if len(rows) == 1:
        total, active = rows[0][1]
        console.print(f"parameters: {total:,} total, {active:,} active per token "
                      f"({100 * active / total:.1f}%)")  # fmt: skip
    elif rows:
        table = Table(title="Parameters (active: what one token uses; a mixture of experts runs "
                      "k of its E experts)", title_justify="left", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False)  # fmt: skip
        table.add_column("model", no_wrap=True)
        for column in ("total", "active", "active %"):
            table.add_column(column, justify="right", no_wrap=True)
        for name, (total, active) in rows:
            table.add_row(published.short_name(name), compact_params(total),
                          compact_params(active), f"{100 * active / total:.1f}")  # fmt: skip
        console.print(table)


def _row(shape: KVShape, token_counts: list[int], batch: int) -> list[str]:
    return [
        shape.name,
        str(shape.layers),
        f"{shape.kv_heads}/{shape.heads}" if shape.latent_dim is None else f"MLA/{shape.heads}",
        str(shape.head_dim) if shape.latent_dim is None else f"{shape.latent_dim} latent",
        SHORT_DTYPE.get(shape.dtype, shape.dtype),
        format_bytes(shape.bytes_per_token),
        *(format_bytes(shape.cache_bytes(t, batch)) for t in token_counts),
    ]
