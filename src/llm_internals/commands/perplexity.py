"""`llm-internals perplexity --model PATH --data CORPUS|FILE`: a model's perplexity on a text,
for comparing a quantised checkpoint with the model it came from.

The token ids are cut into windows of `context + 1` tokens overlapping by one, so every token
after the first is predicted exactly once, from up to `context` tokens before it:
    perplexity = exp(mean over predicted tokens of -log p(token | window so far))
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from llm_internals.console import console, progress
from llm_internals.data.corpus import CORPORA, corpus
from llm_internals.data.split import train_val_split
from llm_internals.devices import add_device_arguments, device_and_dtype
from llm_internals.errors import LLMInternalsError
from llm_internals.models.loading import load_model_and_tokenizer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "perplexity",
        help="a model's perplexity on a corpus or file (e.g. a quantised model vs its source)",
        description="Encode --data with the model's tokenizer and report exp(mean next-token "
        "loss) over non-overlapping windows of --context tokens (every token after the first "
        "is predicted once). Loads any --model folder, quantised ones included.",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="checkpoint folder (ours, HF, or written by `llm-internals quantize`)",
    )
    p.add_argument(
        "--data",
        default="shakespeare",
        help=f"a corpus name ({', '.join(CORPORA)}) or a UTF-8 file or folder",
    )
    p.add_argument(
        "--split",
        default="val",
        choices=["val", "all"],
        help="val: the last 10%% of the text (the training split's validation part); "
        "all: the whole text",
    )
    p.add_argument(
        "--max-tokens", type=int, default=20_000, help="score at most this many tokens (0: all)"
    )
    p.add_argument(
        "--context", type=int, default=None, help="window length (default: the model's max_seq_len)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer file (default: the model folder's)"
    )
    add_device_arguments(p)
    p.set_defaults(func=run)  # fmt: skip


@torch.no_grad()
def mean_token_loss(
    model: torch.nn.Module,
    ids: torch.Tensor,
    context: int,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """(mean next-token cross-entropy in nats, number of predicted tokens) of the 1-D `ids`."""
    if ids.numel() < 2:
        raise LLMInternalsError("the text has fewer than 2 tokens: nothing to predict")
    starts = list(range(0, ids.numel() - 1, context))
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(starts), batch_size):
        windows = [ids[s : s + context + 1] for s in starts[i : i + batch_size]]
        for group in _same_length(windows):
            batch = torch.stack(group).to(device)
            logits = model(batch[:, :-1]).float()
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            total += loss.item()
            count += batch[:, 1:].numel()
        if on_batch is not None:
            on_batch(len(windows))
    return total / count, count


def _same_length(windows: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The full windows together; the shorter last one alone."""
    full = [w for w in windows if w.numel() == windows[0].numel()]
    rest = [[w] for w in windows[len(full) :]]
    return ([full] if full else []) + rest


def run(args: argparse.Namespace) -> int:
    if (
        args.max_tokens < 0
        or args.batch_size <= 0
        or (args.context is not None and args.context < 1)
    ):
        raise LLMInternalsError(
            "--max-tokens must be >= 0, --batch-size and --context positive",
            hint="e.g. --max-tokens 20000 --batch-size 8",
        )
    device, dtype = device_and_dtype(args)
    model, tokenizer, _ = load_model_and_tokenizer(args.model, args.tokenizer, device=device,
                                                   dtype=dtype)  # fmt: skip
    text = corpus(args.data)
    if args.split == "val":
        text = train_val_split(text)[1]
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode
    ids = torch.tensor(encode(text), dtype=torch.long)
    if args.max_tokens:
        ids = ids[: args.max_tokens]
    context = args.context or model.config.max_seq_len
    with progress(transient=True) as bar:
        task = bar.add_task("scoring", total=math.ceil((ids.numel() - 1) / context))
        loss, count = mean_token_loss(model, ids, context, args.batch_size,
                                      lambda n: bar.advance(task, n))  # fmt: skip
    console.print(f"perplexity {math.exp(loss):.4f}  (mean loss {loss:.4f} nats over {count:,} "
                  f"tokens, context {context})")  # fmt: skip
    return 0
