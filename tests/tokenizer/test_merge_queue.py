"""Long chunks (text without spaces) take the O(n log n) merge queue; it must give the ids of
tiktoken, HF `tokenizers` and the rescanning loop it replaces, on any vocabulary."""

import json
import random
from itertools import repeat
from operator import add

import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_internals.tokenizer import Tokenizer
from llm_internals.tokenizer.chunk_bpe import (
    CACHED_CHUNK_CHARS,
    LONG_CHUNK,
    NO_RANK,
    symbols_to_ids,
)
from llm_internals.tokenizer.merge_queue import merge_long
from llm_internals.trace import recording

from .conftest import hf_from_ours, tiktoken_encoding

# texts drawn from a small alphabet (with NUL, which the queue's end marker is made of), so
# that pairs repeat and merges chain
no_space_runs = st.one_of(
    st.text(alphabet="ab\x00\x01", max_size=3 * LONG_CHUNK),
    st.text(alphabet="ab", min_size=LONG_CHUNK + 1, max_size=3 * LONG_CHUNK),  # the queue's
)
mixed_texts = st.lists(no_space_runs, max_size=4).map(" ".join)
# a seeded Random: a permutation hypothesis draws bit by bit stays close to the identity
shuffles = st.integers(0, 2**32 - 1).map(random.Random)
extra_tokens = st.lists(
    st.text(alphabet="ab\x00\x01", min_size=2, max_size=6), max_size=30, unique=True
)


def old_loop(bpe, symbols: str) -> str:
    """The rescanning loop before the merge queue (replaces every occurrence of the best pair
    at once): on a causal merge list it gives the same tokens."""
    while len(symbols) > 1:
        best = min(map(bpe.pair_rank.get, map(add, symbols, symbols[1:]), repeat(NO_RANK)))
        if best == NO_RANK:
            break
        pair = min((symbols.find(c), c) for c in bpe.rank_pairs[best] if c in symbols)[1]
        symbols = symbols.replace(pair, bpe.pair_merged[pair])
    return symbols


@settings(max_examples=150, deadline=None)
@given(extra=extra_tokens, order=shuffles, text=mixed_texts)
def test_random_tiktoken_vocabularies_encode_like_tiktoken(extra, order, text):
    # Ranks are a random permutation: single bytes need not come first and a token may rank
    # before the pieces it is made of (tiktoken still merges by rank, one pair at a time).
    tokens = [bytes([b]) for b in range(256)] + [t.encode() for t in extra if len(t) > 1]
    ranks = list(range(len(tokens)))
    order.shuffle(ranks)
    mergeable = dict(zip(tokens, ranks, strict=True))
    ours = Tokenizer.from_tiktoken(mergeable, pattern="gpt2")
    enc = tiktoken.Encoding("random", pat_str=ours.pattern, mergeable_ranks=mergeable,
                            special_tokens={})  # fmt: skip
    assert ours.encode(text) == enc.encode(text)
    with recording():  # the readable loop the lessons record
        assert ours.encode(text) == enc.encode(text)


def random_merge_list(pairs, order) -> Tokenizer:
    """Merges over a, b, 0x00, 0x01 built bottom-up from `pairs` (some make a token that another
    merge already makes, which HF allows), then shuffled: a merge may use a token that a later
    merge makes (a non-causal list, which HF accepts and applies by rank)."""
    vocab = {b: bytes([b]) for b in range(256)}
    id_of = {t: i for i, t in vocab.items()}
    made = [ord(c) for c in "ab\x00\x01"]
    merges = []
    for a, b in pairs:
        left, right = made[a % len(made)], made[b % len(made)]
        token = vocab[left] + vocab[right]
        if (left, right) in merges:
            continue
        if token not in id_of:
            id_of[token] = len(vocab)
            vocab[len(vocab)] = token
            made.append(id_of[token])
        merges.append((left, right))
    order.shuffle(merges)
    return Tokenizer(vocab, merges)


merge_pairs = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(pairs=merge_pairs, order=shuffles, text=mixed_texts)
def test_random_merge_lists_encode_like_hf(pairs, order, text):
    ours = random_merge_list(pairs, order)
    assert ours.encode(text) == hf_from_ours(ours).encode(text).ids


def one_at_a_time(symbols: str, pair_rank, pair_merged) -> str:
    """The rule itself, spelled out: merge the (lowest rank, leftmost) pair, repeat."""
    parts = list(symbols)
    while True:
        ranked = [
            (pair_rank[p], i) for i, p in enumerate(map(add, parts, parts[1:])) if p in pair_rank
        ]
        if not ranked:
            return "".join(parts)
        _, i = min(ranked)
        parts[i : i + 2] = [pair_merged[parts[i] + parts[i + 1]]]


@settings(max_examples=150, deadline=None)
@given(pairs=merge_pairs, order=shuffles, data=st.data())
def test_queue_follows_the_rule_from_any_token_sequence(pairs, order, data):
    # Starting from arbitrary tokens (not only bytes), pairs enter a rank's bucket out of
    # position order; the queue must still merge the leftmost first.
    bpe = random_merge_list(pairs, order)._bpe
    ids = data.draw(st.lists(st.sampled_from(sorted(bpe.id_of.values())), max_size=60))
    symbols = "".join(map(chr, ids))
    expected = one_at_a_time(symbols, bpe.pair_rank, bpe.pair_merged)
    assert merge_long(symbols, bpe.pair_rank, bpe.pair_merged) == expected


def test_leftmost_first_when_a_bucket_fills_out_of_order():
    # Tokens p, q, x, y and A = p+q = x+y (two merges make A), B = A+A. The pair (A, A) at
    # position 2 enters its bucket before the one at position 0; the leftmost must merge first.
    p, q, a, x, y, big = "pqAxyB"
    pair_rank = {x + y: 1, p + q: 2, a + a: 3}
    pair_merged = {x + y: a, p + q: a, a + a: big}
    assert merge_long(p + q + a + x + y, pair_rank, pair_merged) == big + a


def test_byte_tokens_with_ids_above_255():
    # The queue ranks initial pairs with a 256 x 256 table when every id is below 256, else by
    # searching sorted pair keys: this vocabulary takes the second way.
    ranks = {bytes([b]): b for b in range(256)} | {b"a": 300, b"\xff": 97, b"aa": 256, b"ab": 301}
    ours = Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    enc = tiktoken.Encoding("high", pat_str=ours.pattern, mergeable_ranks=ranks, special_tokens={})
    for text in ("a" * 31, "ab" * 20 + "a", "ba" * 30):
        assert ours.encode(text) == enc.encode(text)


def test_one_occurrence_at_a_time_on_a_non_causal_vocabulary():
    # "aba" ranks before "ab": after the first "ab" merges, (ab, a) outranks the second "ab".
    # One at a time (tiktoken): ab|a|b -> aba|b. Replacing every "ab" first would give ab|ab.
    ranks = {bytes([b]): b for b in range(256)} | {b"aba": 256, b"ab": 257}
    ours = Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    enc = tiktoken.Encoding("nc", pat_str=ours.pattern, mergeable_ranks=ranks, special_tokens={})
    for text in ("abab", "ab" * (LONG_CHUNK + 5), "xabab abab"):
        assert ours.encode(text) == enc.encode(text)
    assert ours.encode("abab") == [256, ord("b")]


def test_a_stale_entry_of_the_last_part_never_merges_with_the_end():
    # The last part absorbs everything to its right, then merges into its left neighbour; a
    # stale entry of it, ranked as pair (0x00, 0x00), must not pair "" with the end marker.
    ranks = {bytes([b]): b for b in range(256)}
    ranks |= {b"\x00\x01": 256, b"\x00\x00\x01": 257, b"\x01\x00\x00\x01": 258, b"\x00\x00": 259}
    ours = Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    enc = tiktoken.Encoding("end", pat_str=ours.pattern, mergeable_ranks=ranks, special_tokens={})
    for text in ("\x02" * LONG_CHUNK + "\x01\x00\x00\x01", "\x01\x00\x00\x01" * LONG_CHUNK):
        assert ours.encode(text) == enc.encode(text)


def test_queue_agrees_with_the_old_loop_and_tiktoken_on_a_trained_vocabulary(tok_small):
    enc = tiktoken_encoding(tok_small)
    bpe = tok_small._bpe
    rng = random.Random(0)
    words = [
        "thou",
        "art",
        "more",
        "lovely",
        "and",
        "more",
        "temperate",
        "rough",
        "winds",
        "do",
        "shake",
    ]
    texts = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000)),
        "".join(rng.choice(words) for _ in range(800)),
        "".join(rng.choice("ab") for _ in range(2000)),
        "a" * 1001,
        "é" * 300 + "中文" * 200,
    ]
    for text in texts:
        symbols = bpe.initial_symbols(text)
        queued = merge_long(symbols, bpe.pair_rank, bpe.pair_merged)
        assert queued == old_loop(bpe, symbols)
        assert symbols_to_ids(queued) == enc.encode_ordinary(text) == tok_small.encode(text)
    for n in range(LONG_CHUNK - 3, LONG_CHUNK + 4):  # both sides of the switch
        text = texts[1][:n]
        assert tok_small.encode_ordinary(text) == enc.encode_ordinary(text)


def test_long_chunks_are_not_cached(tok_small):
    tok_small.clear_cache()
    tok_small.encode("x" * (CACHED_CHUNK_CHARS + 1) + " " + "y" * (CACHED_CHUNK_CHARS - 1) + " z")
    assert sorted(map(len, tok_small._cache)) == [2, CACHED_CHUNK_CHARS]  # " z", " yyy...y"


def test_hf_file_with_long_words(tok_small):
    hf = hf_from_ours(tok_small)
    text = "".join(json.dumps(list(range(300))).split(", "))  # digits and brackets, no spaces
    text += "abcdefghijklmnopqrstuvwxyz" * 40
    assert tok_small.encode(text) == hf.encode(text).ids
