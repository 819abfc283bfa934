"""From a TrainConfig to a finished run: corpus, tokenizer, token files, model, trainer.

Used by `llm-internals train`, the benchmarks and torchrun workers. Everything derived from the
corpus is cached under `<out_dir>/data/` (a trained BPE tokenizer keyed by vocabulary size and a
hash of the training text; token files with their sidecars), so a second run starts at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from llm_internals.console import console as default_console
from llm_internals.data import corpus, train_val_split
from llm_internals.models.loading import load_tokenizer
from llm_internals.training.builders import model_config
from llm_internals.training.checkpoint import (
    TrainingCheckpoint,
    load_training_checkpoint,
    run_folder_of,
)
from llm_internals.training.config import TrainConfig
from llm_internals.training.data import TokenSplits, build_splits
from llm_internals.training.distributed import (
    DistributedContext,
    barrier,
    init_from_env,
    shutdown,
)
from llm_internals.training.trainer import Trainer, TrainResult, build_model


def make_tokenizer(config: TrainConfig, text: str, train_text: str, cache_dir: Path) -> Any:
    """The tokenizer config.tokenizer names: "char", "bpe" (trained once, cached) or a path."""
    from llm_internals.tokenizer import train_bpe
    from llm_internals.tokenizer.char import CharTokenizer

    if config.tokenizer == "char":
        return CharTokenizer.train(text)  # every character of the corpus, val included
    if config.tokenizer == "bpe":
        digest = hashlib.sha256(train_text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        path = cache_dir / f"bpe-{config.bpe_vocab_size}-{digest}.json"
        if path.exists():
            return load_tokenizer(path)
        tokenizer = train_bpe(train_text, config.bpe_vocab_size, special_tokens=("<|endoftext|>",))
        tokenizer.save(path)
        return tokenizer
    return load_tokenizer(config.tokenizer)


def prepare_data(
    config: TrainConfig, tokenizer: Any | None = None, text: str | None = None
) -> tuple[Any, TokenSplits]:
    """(tokenizer, train/val token arrays) for config, built or read from the cache."""
    text = corpus(config.corpus) if text is None else text
    train_text, val_text = train_val_split(text, config.val_fraction)
    cache_dir = Path(config.out_dir) / "data"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = make_tokenizer(config, text, train_text, cache_dir)
    return tokenizer, build_splits(train_text, val_text, tokenizer, cache_dir)


def run_training(
    config: TrainConfig,
    resume: str | Path | TrainingCheckpoint | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    device: str | torch.device = "auto",
) -> TrainResult:
    """Train (or resume) as configured on `device`; under torchrun every process calls this.

    A resume writes into the run folder holding the checkpoint (config.out_dir is set to it):
    a copied run folder continues in the copy, never in the folder it was copied from.
    """
    console = console or default_console
    if resume is None:
        model_config(config, vocab_size=1)  # a bad [model] field fails before any data work
    if config.threads:
        torch.set_num_threads(config.threads)
    dist_ctx: DistributedContext = init_from_env()
    try:
        if not dist_ctx.is_main:
            barrier(dist_ctx)  # rank 0 builds the tokenizer and token files first
        if resume is not None:
            if not isinstance(resume, TrainingCheckpoint):
                resume = load_training_checkpoint(resume, warn=console.print)
            config = config.replace(out_dir=str(run_folder_of(resume.directory)))
            tokenizer = load_tokenizer(resume.directory / "tokenizer.json")
            tokenizer, splits = prepare_data(config, tokenizer)
        else:
            tokenizer, splits = prepare_data(config)
        if dist_ctx.is_main:
            barrier(dist_ctx)
        if resume is not None:
            trainer = Trainer.from_checkpoint(
                resume,
                splits,
                config=config,
                run_dir=config.out_dir,
                console=console,
                dist_ctx=dist_ctx,
                show_progress=show_progress,
                device=device,
            )
            if dist_ctx.is_main:
                console.print(f"Resuming {resume.directory} at step {trainer.step}.")
        else:
            model = build_model(config, tokenizer.vocab_size)
            trainer = Trainer(
                config,
                model,
                tokenizer,
                splits,
                run_dir=config.out_dir,
                console=console,
                dist_ctx=dist_ctx,
                show_progress=show_progress,
                device=device,
            )
        if dist_ctx.is_main:
            n_params = sum(p.numel() for p in trainer.model.parameters())
            console.print(
                f"{n_params:,} parameters; {len(splits.train):,} train / {len(splits.val):,} val "
                f"tokens; {config.tokens_per_step:,} tokens per step on {dist_ctx.world_size} "
                f"process(es) on {trainer.device}."
            )
        return trainer.train()
    finally:
        shutdown(dist_ctx)
