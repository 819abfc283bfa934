"""The fast BPE trainer: the same merges as `naive.train_bpe_naive`, learned incrementally.

Ideas (each measured, see docs/benchmarks.md):

1. Count chunks once (chunk_counts.py, streamed). Training works on the distinct pre-tokenized
   chunks (36k in Shakespeare, 183k in the multilingual corpus), not on all of them.
2. A chunk is a str with one character per token id (chr(id)). A pair of adjacent tokens is then
   a 2-character string (a cheap dict key), `pair in chunk` is a substring test in C, and a merge
   is `chunk.split(pair)` + `chr(new_id).join(...)`: split cuts left to right without overlaps,
   exactly the BPE merge rule, and its parts hold every neighbour of every occurrence.
3. Pair counts are kept up to date only for chunks that contain the merged pair: an index maps
   each pair to the chunks where it appeared (entries may go stale; a substring test skips them).
   Within such a chunk only the neighbours of each merged occurrence change: (x, a) and (b, y)
   lose a count, (x, ab) and (ab, y) gain one; every other pair is untouched.
4. A max-heap of (count, tie-break) with lazy deletion: counts only fall for existing pairs, so a
   popped entry whose count is out of date is pushed back with the current count; only pairs
   containing the new token can grow, and those are pushed after each merge.
5. The cyclic garbage collector is paused (gc_pause.py): no cycles are made, and its repeated
   scans of the growing heap cost about 0.16 s of 0.97 s on Shakespeare.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable

from llm_internals.tokenizer.chunk_counts import TrainingText, count_chunks
from llm_internals.tokenizer.gc_pause import gc_paused
from llm_internals.tokenizer.tokenizer import Tokenizer
from llm_internals.tokenizer.training_common import (
    TrainedBPE,
    assign_special_ids,
    byte_symbol_order,
    check_chunks,
    check_training_request,
    descending_key,
)

ProgressCallback = Callable[[int, int], None]  # (merges done, merges planned)


def learn_merges(
    chunk_counts: dict[str, int],
    n_tokens: int,
    tie_break: str = "hf",
    on_progress: ProgressCallback | None = None,
) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    """Merge until there are `n_tokens` distinct tokens (or nothing is left to merge)."""
    vocab = [bytes([b]) for b in range(256)]
    priority = _priority_function(tie_break, vocab, n_tokens)
    words: list[str] = []
    weights: list[int] = []
    for chunk, n in chunk_counts.items():
        word = chunk.encode("utf-8").decode("latin-1")  # one char per byte id 0..255
        if len(word) > 1:
            words.append(word)
            weights.append(n)

    pair_counts: dict[str, int] = defaultdict(int)
    where: dict[str, list[int]] = defaultdict(list)
    for i, word in enumerate(words):
        n = weights[i]
        pairs = list(map(str.__add__, word[:-1], word[1:]))
        for pair in pairs:
            pair_counts[pair] += n
        for pair in set(pairs):
            where[pair].append(i)
    heap = [(priority(p, n), p) for p, n in pair_counts.items()]
    heapq.heapify(heap)

    id_of = {token: i for i, token in enumerate(vocab)}
    merges: list[tuple[int, int, int]] = []
    planned = n_tokens - len(vocab)
    while len(vocab) < n_tokens and heap:
        prio, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count <= 0:
            continue
        current = priority(pair, count)
        if prio != current:  # stale entry: count fell since it was pushed
            heapq.heappush(heap, (current, pair))
            continue
        a, b = pair
        merged = vocab[ord(a)] + vocab[ord(b)]
        new_id = id_of.get(merged)
        if new_id is None:  # else another merge path already spelled these bytes: reuse it
            new_id = len(vocab)
            vocab.append(merged)
            id_of[merged] = new_id
        merges.append((ord(a), ord(b), new_id))
        z = chr(new_id)
        grown: set[str] = set()
        for i in where.pop(pair):
            word = words[i]
            if pair not in word:
                continue  # stale index entry: an earlier merge already consumed the pair here
            parts = word.split(pair)  # non-overlapping, left to right: the BPE merge rule
            words[i] = z.join(parts)
            n = weights[i]
            if len(parts) == 2:  # one occurrence (the common case), written out for speed
                left, right = parts
                if left:
                    c = left[-1]
                    pair_counts[c + a] -= n
                    p = c + z
                    pair_counts[p] += n
                    where[p].append(i)
                    grown.add(p)
                if right:
                    c = right[0]
                    pair_counts[b + c] -= n
                    p = z + c
                    pair_counts[p] += n
                    where[p].append(i)
                    grown.add(p)
                continue
            fresh = _update_neighbours(parts, a, b, z, n, pair_counts)
            for p in set(fresh):
                where[p].append(i)
            grown.update(fresh)
        pair_counts.pop(pair, None)
        for p in grown:
            heapq.heappush(heap, (priority(p, pair_counts[p]), p))
        if on_progress is not None:
            on_progress(len(merges), planned)
    return vocab, merges


def _update_neighbours(
    parts: list[str], a: str, b: str, z: str, n: int, pair_counts: dict[str, int]
) -> list[str]:
    """Move the counts of the pairs next to each merged occurrence of (a, b): between parts[j]
    and parts[j + 1] sat one occurrence, now the token z. Its left neighbour c = parts[j][-1]
    turns (c, a) into (c, z); its right neighbour c = parts[j + 1][0] turns (b, c) into (z, c);
    an empty part between two occurrences turns (b, a) into (z, z). Returns the new pairs."""
    fresh = []
    last = len(parts) - 1
    for j, part in enumerate(parts):
        if part:
            if j:
                c = part[0]
                pair_counts[b + c] -= n
                p = z + c
                pair_counts[p] += n
                fresh.append(p)
            if j < last:
                c = part[-1]
                pair_counts[c + a] -= n
                p = c + z
                pair_counts[p] += n
                fresh.append(p)
        elif 0 < j < last:
            pair_counts[b + a] -= n
            pair_counts[z + z] += n
            fresh.append(z + z)
    return fresh


def _priority_function(
    tie_break: str, vocab: list[bytes], n_tokens: int
) -> Callable[[str, int], object]:
    """heapq pops the smallest priority: the highest count, then the tie-break rule's winner."""
    if tie_break == "lexicographic":
        keys: dict[str, str] = {}

        def key(symbol: str) -> str:
            k = keys.get(symbol)
            if k is None:
                k = keys[symbol] = descending_key(vocab[ord(symbol)])
            return k

        return lambda pair, count: (-count, key(pair[0]), key(pair[1]))
    order = byte_symbol_order()
    bits = max(n_tokens, 256).bit_length()

    def hf_priority(pair: str, count: int) -> int:
        # One int: -count, then order(left), then order(right); merged ids order as themselves.
        left, right = ord(pair[0]), ord(pair[1])
        return (
            (-count << (2 * bits))
            | ((order[left] if left < 256 else left) << bits)
            | (order[right] if right < 256 else right)
        )

    return hf_priority


def train_merges(
    text: TrainingText,
    vocab_size: int,
    pattern: str = "gpt2",
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    tie_break: str = "hf",
    on_progress: ProgressCallback | None = None,
) -> TrainedBPE:
    """Train byte-level BPE: 256 byte tokens + learned merges + special tokens = vocab_size.

    `text`: a str (one document), a path (a UTF-8 file or a folder of .txt files, streamed as
    one document) or an iterable of str (each its own document); see chunk_counts.py.
    `tie_break`: "hf" (HF tokenizers' merges) or "lexicographic" (CS336's rule); see
    training_common.py."""
    specials = check_training_request(vocab_size, special_tokens, tie_break)
    with gc_paused():
        chunk_counts = count_chunks(text, pattern, specials)
        check_chunks(chunk_counts)
        vocab, merges = learn_merges(
            chunk_counts, vocab_size - len(specials), tie_break, on_progress
        )
    return TrainedBPE(vocab, merges, assign_special_ids(len(vocab), specials), pattern)


def train_bpe(
    text: TrainingText,
    vocab_size: int,
    pattern: str = "gpt2",
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    tie_break: str = "hf",
    on_progress: ProgressCallback | None = None,
) -> Tokenizer:
    """Train a byte-level BPE Tokenizer (see `train_merges` for the arguments)."""
    trained = train_merges(text, vocab_size, pattern, special_tokens, tie_break, on_progress)
    return tokenizer_from_trained(trained)


def tokenizer_from_trained(trained: TrainedBPE) -> Tokenizer:
    """Wrap a training result (fast or naive trainer) as a Tokenizer."""
    return Tokenizer(
        dict(enumerate(trained.vocab)),
        [(left, right) for left, right, _ in trained.merges],
        trained.special_tokens,
        trained.pattern,
    )
