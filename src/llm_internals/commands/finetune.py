"""`llm-internals finetune --model PATH --data FILE|corpus --out DIR`: LoRA / QLoRA fine-tuning."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_internals.adapters import ALL_LINEAR, TARGETS, LoraSettings
from llm_internals.console import console
from llm_internals.data.corpus import CORPORA
from llm_internals.devices import add_device_arguments, resolve_device
from llm_internals.errors import LLMInternalsError
from llm_internals.models.loading import LATEST_FILE
from llm_internals.training.config import DTYPES, TrainConfig
from llm_internals.training.finetune import FinetuneSpec
from llm_internals.training.finetune_run import merge_run, run_finetune


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model with LoRA or QLoRA; writes a PEFT-compatible adapter",
        description="Train low-rank adapters (h = W x + alpha/r B A x) on a frozen base, or on a "
        "base frozen in NF4 (--qlora). Writes OUT/adapter (adapter_model.safetensors + "
        "adapter_config.json, loadable by PEFT for Llama and GPT-2 models), step-* checkpoints and "
        "log.jsonl; `generate --model BASE --adapter OUT/adapter` uses the result.",
    )
    p.add_argument("--model", metavar="PATH", help="base model folder (ours, HF, or a run folder)")
    p.add_argument(
        "--data",
        default="shakespeare",
        metavar="FILE|CORPUS",
        help=f"a UTF-8 text file or folder, or a corpus name ({', '.join(CORPORA)})",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    p.add_argument("--lora-r", type=int, default=8, metavar="R", help="adapter rank r")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="scale numerator alpha")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapter input")
    p.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) (rsLoRA)")
    p.add_argument(
        "--targets",
        default="q,k,v,o",
        help=f"comma-separated layers to adapt: {', '.join(TARGETS)}, or {ALL_LINEAR}",
    )
    p.add_argument("--qlora", action="store_true", help="freeze the base in NF4 (QLoRA)")
    p.add_argument(
        "--no-double-quant",
        action="store_true",
        help="with --qlora: keep NF4 block scales in fp32 instead of 8 bits",
    )
    p.add_argument("--steps", type=int, default=200, metavar="N", help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--block-size", type=int, default=128, help="tokens per sequence")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-steps", type=int, default=10, help="linear warmup steps")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out end of the text")
    p.add_argument("--eval-interval", type=int, default=50, help="steps between validations")
    p.add_argument("--eval-iters", type=int, default=10, help="batches per validation")
    p.add_argument(
        "--checkpoint-interval", type=int, default=50, help="steps between checkpoints (0: end)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="forward and loss dtype (bfloat16: autocast, as QLoRA computes; weights, adapters "
        "and AdamW states stay float32)",
    )
    p.add_argument("--seed", type=int, default=1337, help="seed for init, batches and dropout")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--merge",
        action="store_true",
        help="afterwards write OUT/merged (our format) and OUT/merged-hf (HF) with the adapter "
        "folded into the base weights",
    )
    add_device_arguments(p, dtype=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    has_run = (out / LATEST_FILE).exists()
    if args.resume and not has_run:
        raise LLMInternalsError(
            f"--resume: {out} holds no fine-tuning run", hint="drop --resume to start one"
        )
    if not args.resume:
        if has_run:
            raise LLMInternalsError(
                f"{out} already holds a fine-tuning run",
                hint="pass --resume to continue it, or another --out",
            )
        if args.model is None:
            raise LLMInternalsError("--model is required", hint="--model PATH (the base model)")
    spec = FinetuneSpec(
        method="qlora" if args.qlora else "lora",
        lora=LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, args.rslora),
        targets=args.targets,
        double_quant=not args.no_double_quant,
    )
    config = TrainConfig(
        corpus=args.data,
        out_dir=str(out),
        batch_size=args.batch_size,
        block_size=args.block_size,
        max_steps=args.steps,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        val_fraction=args.val_fraction,
        eval_interval=args.eval_interval,
        eval_iters=args.eval_iters,
        checkpoint_interval=args.checkpoint_interval,
        seed=args.seed,
        threads=args.threads,
        dtype=args.dtype,
    )
    result = run_finetune(args.model, spec, config, resume=args.resume,
                          device=resolve_device(args.device))  # fmt: skip
    val = f"{result.final_val_loss:.4f}" if result.final_val_loss is not None else "n/a"
    console.print(f"Done: {result.steps} steps, val loss {val}. Adapter: {out / 'adapter'}")
    if args.merge:
        merge_run(out, out)
    return 0
