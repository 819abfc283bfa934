"""Train the small model the lessons ship with, and write it into the package.

    .venv/bin/python scripts/train_lesson_model.py   # the shipped model (4-25 min on 1 thread)
    .venv/bin/python scripts/train_lesson_model.py --steps 50 --out /tmp/lesson_model

What it does, all with the library's own code and one fixed seed:
1. the default corpus (Shakespeare, data/corpus.py), split 90/10 at a line start;
2. byte-level BPE trained on the training part (tokenizer/trainer.py), VOCAB_SIZE ids;
3. a Llama-style DecoderLM (RoPE, RMSNorm, SwiGLU) of LESSON_MODEL, trained by the project's
   Trainer (AdamW, warmup + cosine) for --steps steps of BATCH_SIZE x BLOCK_SIZE tokens;
4. its loss on a fixed held-out slice of the validation text (HELDOUT_WINDOWS windows of
   BLOCK_SIZE + 1 tokens from the start of the validation part) and on the whole validation part.

Written to --out (default src/llm_internals/explain/assets/lesson_model/): config.json and
model.safetensors (models/checkpoint.py), tokenizer.json, and training.json: the command, seed,
steps, losses and the logged loss curve (the training-curve figure draws it).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llm_internals.data import corpus, train_val_split
from llm_internals.files import write_json
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.decoder import DecoderLM
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import Trainer, TrainResult, build_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "llm_internals" / "explain" / "assets" / "lesson_model"
SEED = 1337
STEPS = 1000
VOCAB_SIZE = 1024
BLOCK_SIZE = 128
BATCH_SIZE = 16
HELDOUT_WINDOWS = 4  # the slice the tests recompute live
VAL_WINDOWS = 64  # the slice the recorded validation loss is measured on
LESSON_MODEL: dict[str, Any] = dict(
    family="llama", d_model=128, n_layers=4, n_heads=4, d_ff=352, position="rope",
    norm="rmsnorm", ffn="gated", activation="silu", tie_embeddings=False,
)  # fmt: skip


def lesson_train_config(steps: int, seed: int, work_dir: Path, **overrides: Any) -> TrainConfig:
    """The TrainConfig of the lesson model (intervals scaled to the run's length)."""
    fields: dict[str, Any] = dict(
        model=dict(LESSON_MODEL), corpus="shakespeare", tokenizer="bpe", bpe_vocab_size=VOCAB_SIZE,
        out_dir=str(work_dir), batch_size=BATCH_SIZE, block_size=BLOCK_SIZE, max_steps=steps,
        lr=2e-3, min_lr=2e-4, warmup_steps=min(50, steps), weight_decay=0.1, grad_clip=1.0,
        eval_interval=max(steps // 10, 1), eval_iters=10, log_interval=max(steps // 100, 1),
        seed=seed, keep_checkpoints=1, fast=True,
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def train(
    steps: int,
    seed: int = SEED,
    work_dir: Path | None = None,
    text: str | None = None,
    show_progress: bool = False,
    **overrides: Any,
) -> tuple[DecoderLM, Any, TrainResult]:
    """(model, tokenizer, result) of a run; `text` replaces the corpus (tests use a slice).
    The tokenizer and token files are cached in work_dir/data; no checkpoint is written."""
    with tempfile.TemporaryDirectory() as tmp:
        config = lesson_train_config(steps, seed, Path(work_dir or tmp), **overrides)
        tokenizer, splits = prepare_data(config, text=text)
        model = build_model(config, tokenizer.vocab_size)
        trainer = Trainer(config, model, tokenizer, splits, run_dir=None,
                          show_progress=show_progress, device="cpu")  # fmt: skip
        result = trainer.train()
    model.set_attn_impl("scratch")  # the lessons' path: attention as its recorded steps
    model.set_fused_ops(False)
    return model.eval(), tokenizer, result


def heldout_ids(text: str, tokenizer: Any, windows: int = HELDOUT_WINDOWS) -> torch.Tensor:
    """(windows, BLOCK_SIZE + 1) token ids from the start of the validation part of `text`."""
    val_text = train_val_split(text, 0.1)[1]
    need = windows * (BLOCK_SIZE + 1)
    ids = tokenizer.encode_ordinary(val_text[: 8 * need])  # ~4 characters per token: enough
    return torch.tensor(ids[:need]).view(windows, BLOCK_SIZE + 1)


@torch.no_grad()
def mean_loss(model: DecoderLM, windows: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over windows of BLOCK_SIZE + 1 ids."""
    losses = [
        F.cross_entropy(model(w[:, :-1])[0], w[0, 1:], reduction="sum") for w in windows.split(1)
    ]
    return float(torch.stack(losses).sum() / (windows.shape[0] * (windows.shape[1] - 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=STEPS, help="optimizer steps (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="seed (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: the package's)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "out" / "lesson-model-work",
        help="cache of the tokenizer and token files (default: out/lesson-model-work)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default %(default)s)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    text = corpus("shakespeare")
    model, tokenizer, result = train(args.steps, args.seed, args.work_dir, text, True)
    heldout = heldout_ids(text, tokenizer, VAL_WINDOWS)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out)
    tokenizer.save(args.out / "tokenizer.json")
    record = {
        "command": f"python scripts/train_lesson_model.py --steps {args.steps} --seed {args.seed}",
        "seed": args.seed,
        "steps": result.steps,
        "corpus": "shakespeare",
        "vocab_size": tokenizer.vocab_size,
        "block_size": BLOCK_SIZE,
        "batch_size": BATCH_SIZE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "threads": args.threads,
        "train_seconds": round(result.elapsed_s, 1),
        "final_train_loss": result.final_loss,
        "val_loss_estimate": result.final_val_loss,
        "val_loss": mean_loss(model, heldout),  # VAL_WINDOWS windows from the validation start
        "val_tokens": VAL_WINDOWS * BLOCK_SIZE,
        "uniform_loss": math.log(tokenizer.vocab_size),
        "heldout": {
            "windows": HELDOUT_WINDOWS,
            "tokens_per_window": BLOCK_SIZE,
            "loss": mean_loss(model, heldout[:HELDOUT_WINDOWS]),
        },  # fmt: skip
        "curve": [r for r in result.history if "loss" in r or "val_loss" in r],
    }
    write_json(args.out / "training.json", record)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s: val loss "
          f"{record['val_loss']:.4f} (uniform {record['uniform_loss']:.4f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
