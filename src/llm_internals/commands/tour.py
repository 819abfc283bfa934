"""`llm-internals tour`: the main job, a walk through the whole stack on the default corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_internals.devices import add_device_arguments
from llm_internals.tour import run_tour


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tour",
        help="walk through the whole stack on the default corpus (start here)",
        description="Run every built stage (corpus, tokenizer, model, training, generation, "
        "serving) on the default corpus, printing what each did and what it measured.",
    )
    p.add_argument("--corpus", default="shakespeare", help="corpus name or path to UTF-8 text")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("out/tour"),
        help="where the tour saves what it builds (default: out/tour)",
    )
    add_device_arguments(
        p,
        dtype_help="; for the generation and serving stages (training keeps float32 weights "
        "and runs in bf16 autocast)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_tour(corpus_source=args.corpus, workdir=args.workdir, device=args.device,
             dtype=args.dtype)  # fmt: skip
    return 0
