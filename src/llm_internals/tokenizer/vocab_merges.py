"""Building a tokenizer from a vocabulary and merges given as byte pairs.

The form other from-scratch courses (CS336, minbpe-style trainers) hand over:
    vocab = {0: b"\x00", ..., 256: b"th", 257: b"the", 258: b"<|endoftext|>"}
    merges = [(b"t", b"h"), (b"th", b"e"), ...]          # in rank order
    special_tokens = ["<|endoftext|>"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer.tokenizer import Tokenizer


def from_vocab_merges(
    vocab: Mapping[int, bytes],
    merges: Iterable[tuple[bytes, bytes]],
    special_tokens: Iterable[str] | Mapping[str, int] = (),
    pattern: str = "gpt2",
) -> Tokenizer:
    """A Tokenizer from vocab (id -> bytes), merges (byte pairs in rank order) and special
    tokens: a mapping to ids, or strings, which are looked up in `vocab` by their UTF-8 bytes
    (and taken out of the ordinary tokens) or else given the next free ids."""
    id_of = {token: token_id for token_id, token in vocab.items()}
    pairs = []
    for rank, (left, right) in enumerate(merges):
        if left not in id_of or right not in id_of:
            missing = left if left not in id_of else right
            raise LLMInternalsError(
                f"merge {rank} ({left!r}, {right!r}): {missing!r} is not in vocab"
            )
        pairs.append((id_of[left], id_of[right]))
    if isinstance(special_tokens, Mapping):
        specials = dict(special_tokens)
    else:
        specials, next_id = {}, max(vocab, default=-1) + 1
        for name in special_tokens:
            if not isinstance(name, str):
                raise LLMInternalsError(f"special token {name!r} is not a string")
            token_id = id_of.get(name.encode("utf-8"))
            if token_id is None:
                token_id, next_id = next_id, next_id + 1
            specials[name] = token_id
    ordinary = {i: t for i, t in vocab.items() if i not in specials.values()}
    return Tokenizer(ordinary, pairs, specials, pattern)
