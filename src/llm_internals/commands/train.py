"""`llm-internals train`: train a model from a TOML config, every field overridable by a flag."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from llm_internals.console import console
from llm_internals.errors import LLMInternalsError
from llm_internals.training.config import TrainConfig, parse_value

NAME = "train"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="train a model from a config file (checkpoints, resume, DDP via torchrun)",
        description=(
            "Train a decoder LM as a TOML config describes (see configs/). Every training field "
            "has a flag that overrides the file (--max-steps 500); --set model.d_model=256 "
            "overrides a model field. --resume continues a run exactly from its last "
            "checkpoint. Under torchrun each process runs this command (see docs/training.md)."
        ),
    )
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--resume", metavar="PATH", help="a run folder or step-* checkpoint")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, e.g. model.n_layers=6 (repeatable)",
    )
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None
            )
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                type=type(default),
                default=None,
                metavar=type(default).__name__.upper(),
                help=f"override {field.name} (default {default!r})",
            )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file (or the saved config of the run being resumed), then the flags."""
    if args.config:
        config = TrainConfig.load(args.config)
    elif args.resume:
        from llm_internals.files import read_json
        from llm_internals.training.checkpoint import STATE_FILE, resolve_checkpoint

        saved = read_json(resolve_checkpoint(args.resume) / STATE_FILE).get("train_config", {})
        config = TrainConfig.from_dict(saved, source=f"{args.resume}: train_config")
    else:
        config = TrainConfig()
    overrides: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if field.name != "model" and value is not None:
            overrides[field.name] = value
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise LLMInternalsError(f"--set {item!r}: expected KEY=VALUE, e.g. model.n_layers=6")
        overrides[key.strip()] = parse_value(text.strip())
    return config.with_overrides(overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    from llm_internals.training.run import run_training

    config = config_from_args(args)
    result = run_training(config, resume=args.resume)
    val = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    console.print(
        f"Finished at step {result.steps}: train loss {result.final_loss:.4f}, val loss {val}, "
        f"{result.tokens_per_s:,.0f} tokens/s over {result.elapsed_s:.1f} s. "
        f"Checkpoints and log.jsonl are in {config.out_dir}."
    )
    return 0
