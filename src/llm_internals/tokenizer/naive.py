"""The readable reference BPE trainer: recount every pair before every merge.

    repeat until the vocabulary is full:
        count every adjacent pair of symbols in every chunk (weighted by how often the chunk
        occurs in the corpus)
        pick the most frequent pair (ties: see training_common)
        give the concatenated bytes a new id and replace the pair everywhere, left to right

It costs a full pass over all chunks per merge, so it is only for small corpora, the lesson and
the tests; `trainer.train_bpe` learns the same merges incrementally. Under an explain recorder it
records "bpe.pair_counts" (before each merge), "bpe.merge" and "bpe.chunks" (after each merge).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from llm_internals.tokenizer.chunk_counts import TrainingText, count_chunks
from llm_internals.tokenizer.training_common import (
    TrainedBPE,
    assign_special_ids,
    byte_symbol_order,
    check_chunks,
    check_training_request,
)
from llm_internals.trace import is_recording, record


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def count_pairs(chunks: list[tuple[list[int], int]]) -> Counter[tuple[int, int]]:
    """Occurrences of each adjacent pair over all chunks, each chunk weighted by its count."""
    counts: Counter[tuple[int, int]] = Counter()
    for ids, weight in chunks:
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] += weight
    return counts


def train_bpe_naive(
    text: TrainingText,
    vocab_size: int,
    pattern: str = "gpt2",
    special_tokens: Iterable[str] = (),
    tie_break: str = "hf",
) -> TrainedBPE:
    """Learn byte-level BPE merges until the vocabulary (bytes + merges + specials) is full."""
    specials = check_training_request(vocab_size, special_tokens, tie_break)
    chunk_counts = count_chunks(text, pattern, specials)
    check_chunks(chunk_counts)
    chunks = [(list(chunk.encode("utf-8")), n) for chunk, n in chunk_counts.items()]
    vocab = [bytes([b]) for b in range(256)]
    id_of = {token: i for i, token in enumerate(vocab)}
    merges: list[tuple[int, int, int]] = []
    order = byte_symbol_order()

    def hf_rank(pair: tuple[int, int]) -> tuple[int, int]:
        return (order[pair[0]] if pair[0] < 256 else pair[0]), (
            order[pair[1]] if pair[1] < 256 else pair[1]
        )

    def greatest_bytes(pair: tuple[int, int]) -> tuple[bytes, bytes]:
        return vocab[pair[0]], vocab[pair[1]]

    while len(vocab) + len(specials) < vocab_size:
        pair_counts = count_pairs(chunks)
        if not pair_counts:
            break  # every chunk is a single token: nothing left to merge
        best_count = max(pair_counts.values())
        ties = [p for p, n in pair_counts.items() if n == best_count]
        best = min(ties, key=hf_rank) if tie_break == "hf" else max(ties, key=greatest_bytes)
        merged = vocab[best[0]] + vocab[best[1]]
        new_id = id_of.get(merged)
        if new_id is None:  # two merge paths can spell the same bytes: reuse that token (as HF)
            new_id = len(vocab)
            vocab.append(merged)
            id_of[merged] = new_id
        if is_recording():
            record("bpe.pair_counts", dict(pair_counts))
            record("bpe.merge", (best[0], best[1], new_id, best_count))
        merges.append((best[0], best[1], new_id))
        chunks = [(merge_pair(ids, best, new_id), n) for ids, n in chunks]
        if is_recording():
            record("bpe.chunks", [(list(ids), n) for ids, n in chunks])
    return TrainedBPE(vocab, merges, assign_special_ids(len(vocab), specials), pattern)
