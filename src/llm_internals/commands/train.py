"""`llm-internals train`: train a model from a TOML config, every field overridable by a flag."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from llm_internals.console import console
from llm_internals.devices import add_device_arguments, resolve_device
from llm_internals.errors import LLMInternalsError
from llm_internals.training.config import DTYPES, OPTIMIZERS, TrainConfig, parse_value

NAME = "train"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="train a model from a config file (checkpoints, resume, DDP via torchrun)",
        description=(
            "Train a decoder LM as a TOML config describes (see configs/). Every training field "
            "has a flag that overrides the file (--max-steps 500); --set model.d_model=256 "
            "overrides a model field. --resume continues a run exactly from its last intact "
            "checkpoint, writing into the folder it resumes; the model, tokenizer and corpus "
            "cannot change on resume. Under torchrun each process runs this command (see "
            "docs/training.md)."
        ),
    )
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run in this folder (or from one of its step-* folders); new "
        "checkpoints and log.jsonl are written there",
    )
    add_device_arguments(parser, dtype=False)
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
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"override {field.name} (default {'on' if default else 'off'})",
            )
        else:
            choices = CHOICES.get(field.name)
            parser.add_argument(
                flag,
                dest=field.name,
                type=type(default),
                default=None,
                choices=choices,
                metavar="{" + ",".join(choices) + "}"
                if choices
                else type(default).__name__.upper(),
                help=f"override {field.name} (default {default!r})"
                + (f"; {FIELD_NOTES[field.name]}" if field.name in FIELD_NOTES else ""),
            )
    parser.set_defaults(func=run)


CHOICES = {"optimizer": OPTIMIZERS, "dtype": DTYPES}
FIELD_NOTES = {
    "dtype": "bfloat16 runs forward and loss under autocast, weights stay float32",
    "keep_checkpoints": "the newest N step-* folders are kept, 0 keeps all",
    "max_minutes": "0 = no time limit",
    "tokenizer": "char, bpe or a tokenizer.json path",
    "moe_aux_loss_coef": "MoE models: weight of the Switch load-balancing loss (0 = off)",
    "moe_z_loss_coef": "MoE models: weight of the router z-loss (0 = off)",
    "moe_bias_update_rate": "MoE models: gamma of the aux-loss-free bias update after each "
    "step, b += gamma * sign(mean load - load) (0 = off; DeepSeek-V3 used 0.001)",
}


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Any]:
    """(config, loaded checkpoint or None): the config file, or on --resume the saved config of
    the run's newest intact checkpoint, then the flags."""
    checkpoint = None
    if args.resume:
        from llm_internals.training.checkpoint import load_training_checkpoint, run_folder_of

        if args.config:
            raise LLMInternalsError(
                "--config starts a new run; --resume continues with the run's saved config",
                hint="drop --config and change fields with flags such as --max-steps",
            )
        checkpoint = load_training_checkpoint(args.resume, warn=console.print)
        run_dir = run_folder_of(checkpoint.directory)
        if args.out_dir is not None and Path(args.out_dir).resolve() != run_dir.resolve():
            raise LLMInternalsError(
                f"--out-dir {args.out_dir}: a resume writes into the run it resumes ({run_dir})",
                hint=f"to branch a run, copy it first (cp -r {run_dir} NEW) and --resume NEW",
            )
        config = checkpoint.config.replace(out_dir=str(run_dir))
    elif args.config:
        config = TrainConfig.load(args.config)
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
    config = config.with_overrides(overrides) if overrides else config
    if checkpoint is not None:
        from llm_internals.training.config import check_resume_config

        check_resume_config(checkpoint.config, config, checkpoint.step)
    return config, checkpoint


def run(args: argparse.Namespace) -> int:
    from llm_internals.training.run import run_training

    device = resolve_device(args.device)  # a device that is not here fails before any work
    config, checkpoint = config_from_args(args)
    result = run_training(config, resume=checkpoint, device=device)
    if result.stop_reason == "time_limit":
        console.print(
            f"Stopped on the time limit (--max-minutes {config.max_minutes:g}) at step "
            f"{result.steps} of {config.max_steps}."
        )
    val = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    console.print(
        f"Finished at step {result.steps}: train loss {result.final_loss:.4f}, val loss {val}, "
        f"{result.tokens_per_s:,.0f} tokens/s over {result.elapsed_s:.1f} s. "
        f"Checkpoints and log.jsonl are in {config.out_dir}."
    )
    return 0
