"""Tour stage "training": train a small BPE-level GPT on the corpus for a few minutes.

Shows train and validation loss falling next to two baselines that need no model at all:
the uniform guess ln(V) and the unigram model (each token predicted by its training-set
frequency, whose validation cross-entropy is what "knowing only token counts" buys). Anything
the transformer gets below the unigram line it learned from context.
"""

from __future__ import annotations

import math

import numpy as np
from rich.table import Table

from llm_internals.devices import describe_device
from llm_internals.models import save_checkpoint
from llm_internals.tour import TourContext
from llm_internals.training.config import TrainConfig
from llm_internals.training.data import build_splits
from llm_internals.training.trainer import Trainer, build_model

# The same settings as configs/tour.toml (a test keeps them equal).
TOUR_CONFIG = TrainConfig(
    model={
        "family": "gpt2",
        "d_model": 128,
        "n_layers": 4,
        "n_heads": 4,
        "position": "learned",
        "norm": "layernorm",
        "norm_eps": 1e-5,
        "ffn": "mlp",
        "activation": "gelu",
        "tie_embeddings": True,
    },
    optimizer="muon",
    tokenizer="bpe",
    bpe_vocab_size=8192,
    out_dir="out/tour/training",
    batch_size=16,
    block_size=64,
    max_steps=300,
    max_minutes=2.5,
    lr=2e-3,
    min_lr=2e-4,
    warmup_steps=30,
    eval_interval=50,
    eval_iters=10,
    log_interval=10,
    sample_interval=0,
    sample_tokens=60,
    sample_prompt="ROMEO.\n",
    dtype="bfloat16",
)
FALLBACK_VOCAB = 2048
OPTIMIZER_NAMES = {"adamw": "AdamW", "muon": "Muon (hidden matrices) + AdamW (the rest)"}


def unigram_baselines(train: np.ndarray, val: np.ndarray, vocab_size: int) -> tuple[float, float]:
    """(entropy of the training unigram distribution, its cross-entropy on validation), in nats
    per token. Add-one smoothing keeps tokens unseen in training from costing infinity."""
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size) + 1.0
    probs = counts / counts.sum()
    entropy = float(-(probs * np.log(probs)).sum())
    val_ce = float(-np.log(probs[np.asarray(val, dtype=np.int64)]).mean())
    return entropy, val_ce


def run(ctx: TourContext) -> None:
    config = TOUR_CONFIG.replace(out_dir=str(ctx.workdir / "training"))
    tokenizer = ctx.artifacts.get("tokenizer")
    if tokenizer is None:
        from llm_internals.tokenizer import train_bpe

        ctx.console.print(f"No tokenizer from an earlier stage: training a {FALLBACK_VOCAB} BPE.")
        tokenizer = train_bpe(ctx.train_text, FALLBACK_VOCAB, special_tokens=("<|endoftext|>",))
    splits = build_splits(
        ctx.train_text, ctx.val_text, tokenizer, ctx.workdir / "training" / "data"
    )
    model = ctx.artifacts.get("model")  # built (untrained) by the "model" stage
    if model is None or model.config.vocab_size != tokenizer.vocab_size:
        model = build_model(config, tokenizer.vocab_size)
    entropy, unigram_val = unigram_baselines(splits.train, splits.val, tokenizer.vocab_size)
    uniform = math.log(tokenizer.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    ctx.console.print(
        f"Training a {model.config.n_layers}-layer, {model.config.d_model}-dim GPT "
        f"({n_params:,} parameters) on {len(splits.train):,} BPE tokens: {config.max_steps} steps "
        f"of {config.batch_size} x {config.block_size} tokens, {OPTIMIZER_NAMES[config.optimizer]} "
        f"with warmup + cosine, bf16 autocast on {describe_device(ctx.device)}, at most "
        f"{config.max_minutes} minutes."
    )
    trainer = Trainer(config, model, tokenizer, splits, run_dir=config.out_dir, console=ctx.console,
                      device=ctx.device)  # fmt: skip
    result = trainer.train()
    if result.stop_reason == "time_limit":
        ctx.console.print(
            f"Training stopped on its time limit ({config.max_minutes:g} minutes) at step "
            f"{result.steps} of {result.max_steps}; the cosine schedule was planned for "
            f"{result.max_steps} steps, so the learning rate had not decayed fully."
        )

    table = Table(title="loss (nats per token; lower is better)", title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("train", justify="right")
    table.add_column("validation", justify="right")
    table.add_row("-", f"{uniform:.3f}", f"{uniform:.3f}", end_section=False)
    for record in (r for r in result.history if "val_loss" in r):
        table.add_row(
            str(record["step"]), f"{record['train_loss']:.3f}", f"{record['val_loss']:.3f}"
        )
    ctx.console.print(table)
    ctx.console.print(
        f"Baselines: uniform guess ln({tokenizer.vocab_size}) = {uniform:.3f} (the '-' row); "
        f"unigram entropy {entropy:.3f} (validation cross-entropy of the unigram model "
        f"{unigram_val:.3f}). The model ends at {result.final_val_loss:.3f}: "
        f"{unigram_val - result.final_val_loss:+.3f} nats per token below the unigram model, "
        f"learned from context. {result.tokens_per_s:,.0f} tokens/s over {result.elapsed_s:.0f} s."
    )
    sample = trainer.sample()
    ctx.console.rule(f"a sample after {result.steps} steps (prompt {config.sample_prompt!r})")
    ctx.console.print(config.sample_prompt + sample, markup=False, highlight=False)
    ctx.console.rule()
    path = ctx.workdir / "model"
    save_checkpoint(model, path)
    tokenizer.save(path / "tokenizer.json")  # so `generate --model PATH` needs nothing else
    ctx.console.print(
        f"Saved the model and its tokenizer to {path} (checkpoints and log.jsonl in "
        f"{config.out_dir}); try `llm-internals generate --model {path} --prompt 'ROMEO.'`."
    )
    ctx.artifacts["model"] = model
    ctx.artifacts["train_result"] = result
