"""Tokenizer benchmark: training and encoding speed against HF `tokenizers` and `tiktoken`.

    python benchmarks/tokenizer.py [--rounds 3] [--encode-rounds 9] [--vocab-size 8192]
                                   [--naive-vocab 384] [--only {all,no-space,multilingual}]

Ours and the reference run interleaved in the same process, round after round, and the table
shows the best round of each (the machine may be shared: interleaving keeps the ratio fair).
Every comparison first checks that both sides produce identical merges / ids.

- training: `train_bpe` vs HF BpeTrainer (ByteLevel pre-tokenizer, all 256 bytes in the
  alphabet, no prefix space) with `train_from_iterator([text])`; the naive reference trainer
  is timed at a smaller vocab (it recounts all pairs for every merge).
- encoding: `encode_ordinary(text)` with a cold chunk cache (and warm) vs tiktoken's
  `encode_ordinary` on the whole corpus with the same vocabulary; `encode_batch(lines)` (cold)
  vs HF `encode_batch(lines)`.
- compression: bytes per token of ours and HF's at the same vocab size.
- multilingual: training on the multilingual corpus (38 languages, 11+ scripts), ours and HF
  with the same vocab and special token, then our ids against tiktoken built from our ranks.
"""

from __future__ import annotations

import argparse
import json
import time

import tiktoken
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from llm_internals.data import corpus
from llm_internals.tokenizer import Tokenizer, train_bpe, train_bpe_naive
from llm_internals.tokenizer.byte_level import token_to_text

console = Console(width=150)


def hf_train(text: str, vocab_size: int, special_tokens: tuple[str, ...] = ()) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_of(rounds: int, contenders: dict) -> tuple[dict[str, float], dict]:
    """Run every contender once per round, interleaved; keep each one's fastest time."""
    best = {name: float("inf") for name in contenders}
    results = {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            seconds, results[name] = timed(fn)
            best[name] = min(best[name], seconds)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--naive-vocab", type=int, default=384)
    parser.add_argument("--encode-rounds", type=int, default=9, help="rounds for encoding")
    parser.add_argument("--no-space-mb", type=float, default=1.0, help="no-space text size")
    parser.add_argument("--no-space-vocab", type=int, default=50_000, help="no-space vocab size")
    parser.add_argument(
        "--only",
        choices=("all", "no-space", "multilingual"),
        default="all",
        help="run one section only",
    )
    args = parser.parse_args()
    if args.only == "no-space":
        return no_space_section(args.encode_rounds, args.no_space_vocab, args.no_space_mb)
    if args.only == "multilingual":
        return multilingual_section(args.rounds, args.vocab_size)
    text = corpus("shakespeare")
    n_bytes = len(text.encode("utf-8"))
    mb = n_bytes / 1e6
    lines = text.splitlines(keepends=True)

    table = Table(title=f"tokenizer, Shakespeare ({mb:.2f} MB), vocab {args.vocab_size}")
    for column in ("measure", "ours", "reference", "ref/ours (x)", "target", "identical"):
        table.add_column(column, justify="right" if column != "measure" else "left")

    # --- training ---------------------------------------------------------------------
    train_times, trained = best_of(
        args.rounds,
        {
            "ours": lambda: train_bpe(text, args.vocab_size, special_tokens=()),
            "hf": lambda: hf_train(text, args.vocab_size),
        },
    )
    ours: Tokenizer = trained["ours"]
    hf: HFTokenizer = trained["hf"]
    hf_merge_list = [tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]]
    our_merge_list = [
        (token_to_text(ours.vocab[a]), token_to_text(ours.vocab[b])) for a, b in ours.merges
    ]
    same_merges = our_merge_list == hf_merge_list
    table.add_row(
        "train (s)", f"{train_times['ours']:.2f}", f"HF {train_times['hf']:.2f}",
        f"{train_times['hf'] / train_times['ours']:.2f}", "ours <= 0.5x HF time",
        f"merges {same_merges}",
    )  # fmt: skip

    naive_merges = args.naive_vocab - 256
    naive_seconds, naive = timed(lambda: train_bpe_naive(text, args.naive_vocab))
    fast_small, fast = timed(lambda: train_bpe(text, args.naive_vocab, special_tokens=()))
    table.add_row(
        f"naive reference, vocab {args.naive_vocab} (s)", f"{fast_small:.2f}",
        f"naive {naive_seconds:.1f}", f"{naive_seconds / fast_small:.1f}",
        f"{naive_seconds / naive_merges * 1000:.0f} ms/merge",
        f"merges {[(a, b) for a, b, _ in naive.merges] == fast.merges}",
    )  # fmt: skip

    # --- encoding: whole text vs tiktoken ---------------------------------------------
    enc = tiktoken.Encoding(
        "bench", pat_str=ours.pattern, mergeable_ranks=ours.to_tiktoken(), special_tokens={}
    )

    def ours_cold():
        ours.clear_cache()
        return ours.encode_ordinary(text)

    times, results = best_of(
        args.encode_rounds,
        {
            "ours cold": ours_cold,
            "ours warm": lambda: ours.encode_ordinary(text),
            "tiktoken": lambda: enc.encode_ordinary(text),
        },
    )
    same = results["ours cold"] == results["tiktoken"] == results["ours warm"]
    for label in ("ours cold", "ours warm"):
        table.add_row(
            f"encode text, {label.split()[1]} cache (MB/s)", f"{mb / times[label]:.2f}",
            f"tiktoken {mb / times['tiktoken']:.2f}", f"{times['tiktoken'] / times[label]:.2f}",
            ">= 0.45 (cold)" if label == "ours cold" else "", f"ids {same}",
        )  # fmt: skip

    # --- encoding: lines vs HF encode_batch -------------------------------------------
    def ours_lines():
        ours.clear_cache()
        return ours.encode_batch(lines)

    times, results = best_of(
        args.encode_rounds, {"ours": ours_lines, "hf": lambda: hf.encode_batch(lines)}
    )
    hf_tokens = [[token_to_text(ours.vocab[i]) for i in ids] for ids in results["ours"]]
    same = hf_tokens == [e.tokens for e in results["hf"]]
    table.add_row(
        "encode_batch lines, cold (MB/s)", f"{mb / times['ours']:.2f}",
        f"HF {mb / times['hf']:.2f}", f"{times['hf'] / times['ours']:.2f}", ">= 2",
        f"tokens {same}",
    )  # fmt: skip

    # --- compression --------------------------------------------------------------------
    ours_ratio = n_bytes / sum(len(ids) for ids in results["ours"])
    hf_ratio = n_bytes / sum(len(e.ids) for e in results["hf"])
    table.add_row(
        "compression (bytes/token, lines)", f"{ours_ratio:.4f}", f"HF {hf_ratio:.4f}",
        f"{ours_ratio / hf_ratio:.4f}", "equal", str(ours_ratio == hf_ratio),
    )  # fmt: skip
    console.print(table)
    console.print(
        f"best of {args.rounds} (training) / {args.encode_rounds} (encoding) interleaved rounds; "
        "naive timed once. "
        f"Ratios > 1 in 'ref/ours' mean ours is faster."
    )
    no_space_section(args.encode_rounds, args.no_space_vocab, args.no_space_mb)
    multilingual_section(args.rounds, args.vocab_size)


def multilingual_section(rounds: int, vocab_size: int) -> None:
    """Training on mixed-script text, where UTF-8 letters take 2-3 bytes: ours beside HF with
    the same vocab and special token; our ids beside tiktoken's from our ranks."""
    import os

    text = corpus("multilingual")
    mb = len(text.encode("utf-8")) / 1e6
    special = ("<|endoftext|>",)
    load_before = os.getloadavg()
    times, trained = best_of(
        rounds,
        {
            "ours": lambda: train_bpe(text, vocab_size, special_tokens=special),
            "hf": lambda: hf_train(text, vocab_size, special),
        },
    )
    ours: Tokenizer = trained["ours"]
    hf_merge_list = [tuple(m) for m in json.loads(trained["hf"].to_str())["model"]["merges"]]
    our_merge_list = [
        (token_to_text(ours.vocab[a]), token_to_text(ours.vocab[b])) for a, b in ours.merges
    ]
    enc = tiktoken.Encoding(
        "multilingual", pat_str=ours.pattern, mergeable_ranks=ours.to_tiktoken(),
        special_tokens=ours.special_tokens,
    )  # fmt: skip
    same_ids = ours.encode_ordinary(text) == enc.encode_ordinary(text)
    table = Table(title=f"training on the multilingual corpus ({mb:.2f} MB), vocab {vocab_size:,}")
    for column in ("measure", "ours (s)", "HF (s)", "ours/HF (x)", "target", "identical"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(
        "train_bpe vs HF BpeTrainer", f"{times['ours']:.2f}", f"{times['hf']:.2f}",
        f"{times['ours'] / times['hf']:.2f}", "<= 0.5",
        f"merges {our_merge_list == hf_merge_list}, ids vs tiktoken {same_ids}",
    )  # fmt: skip
    console.print(table)
    load = " -> ".join(", ".join(f"{x:.2f}" for x in avg) for avg in (load_before, os.getloadavg()))
    console.print(f"best of {rounds} interleaved rounds; load average {load}")


def no_space_section(rounds: int, vocab_size: int, megabytes: float) -> None:
    """Text without spaces is one pre-token chunk: ours (the merge queue, merge_queue.py) beside
    HF `tokenizers` and tiktoken holding the same vocabulary, trained on Shakespeare."""
    import os
    import random
    import string

    text = corpus("shakespeare")
    ours = train_bpe(text, vocab_size, special_tokens=())
    hf = HFTokenizer.from_str(json.dumps(ours.to_hf()))
    enc = tiktoken.Encoding(
        "no-space", pat_str=ours.pattern, mergeable_ranks=ours.to_tiktoken(), special_tokens={}
    )
    n_chars = int(megabytes * 1e6)
    letters = "".join(random.Random(0).choices(string.ascii_lowercase, k=n_chars))
    words = "".join(w for w in text.split() if w.isalpha())[:n_chars]  # letters only: one chunk
    table = Table(title=f"encoding {megabytes:g} MB without spaces, vocab {ours.vocab_size:,}")
    for column in ("text", "ours (s)", "HF (s)", "tiktoken (s)", "HF/ours", "tiktoken/ours",
                   "target", "identical"):  # fmt: skip
        table.add_column(column, justify="left" if column == "text" else "right")

    def hf_cold(sample: str) -> list[int]:
        hf.model._clear_cache()  # HF caches whole words: time the merging, as for ours
        return hf.encode(sample).ids

    for name, sample in (("random letters", letters), ("Shakespeare's words joined", words)):
        times, results = best_of(
            rounds,
            {
                "ours": lambda s=sample: ours.encode_ordinary(s),
                "hf": lambda s=sample: hf_cold(s),
                "tiktoken": lambda s=sample: enc.encode_ordinary(s),
            },
        )
        same = results["ours"] == results["hf"] == results["tiktoken"]
        table.add_row(
            name, f"{times['ours']:.2f}", f"{times['hf']:.2f}", f"{times['tiktoken']:.2f}",
            f"{times['hf'] / times['ours']:.2f}", f"{times['tiktoken'] / times['ours']:.2f}",
            "ours <= 2 s", f"ids {same}",
        )  # fmt: skip
    console.print(table)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"best of {rounds} interleaved rounds; load average {load}")


if __name__ == "__main__":
    main()
