"""Encoding a stream of texts (a file's lines, a generator) lazily, in bounded memory.

`encode_iterable(tok, lines)` yields the ids of `tok.encode("".join(lines))` while reading:
texts are buffered until the buffer holds `buffer_chars` characters, then everything before a
safe cut is encoded and yielded, and only the text after the cut is kept. Memory is the buffer
plus the longest chunk, however long the stream.

A safe cut is a position where encoding the two sides separately gives the same ids as
encoding them together:
- a pre-tokenizer chunk boundary with two whole chunks after it (a chunk at the end of the
  buffer may still grow with the next text, e.g. "hel" + "lo", and the named patterns look at
  most one character past a chunk);
- never inside an allowed special token, nor inside a text that may become one ("<|endof"
  at the end of the buffer), since special tokens are cut out before pre-tokenizing.
Both are checked by a property test against `encode` of the joined text.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llm_internals.tokenizer.tokenizer import Tokenizer

BUFFER_CHARS = 1 << 16


def safe_cut(tok: Tokenizer, text: str, allowed: Collection[str]) -> int:
    """The largest position in `text` where it can be cut without changing its ids (0 when
    there is none yet)."""
    start = 0  # text before the end of the last allowed special token is independent
    if allowed and tok._special_regex is not None:
        for match in tok._special_regex.finditer(text):
            if match.group() in allowed:
                start = match.end()
    chunks = tok._pretokenizer.split(text[start:])
    if len(chunks) < 3:
        return start
    boundaries = list(accumulate(map(len, chunks[:-2]), initial=start))
    limit = boundaries[-1]
    for special in tok.special_tokens:  # keep any tail that may grow into a special token
        for k in range(min(len(special) - 1, len(text)), 0, -1):
            if text.endswith(special[:k]):
                limit = min(limit, len(text) - k)
                break
    return max(b for b in boundaries if b <= limit) if limit >= start else start


def encode_iterable(
    tok: Tokenizer,
    texts: Iterable[str],
    allowed_special: Collection[str] | Literal["all"] = frozenset(),
    disallowed_special: Collection[str] | Literal["all"] = "all",
    buffer_chars: int = BUFFER_CHARS,
) -> Iterator[int]:
    """Yield the ids of `tok.encode("".join(texts), ...)`, reading `texts` lazily."""
    allowed = set(tok.special_tokens) if allowed_special == "all" else set(allowed_special)
    parts: list[str] = []
    size, threshold = 0, buffer_chars
    for text in texts:
        parts.append(text)
        size += len(text)
        if size < threshold:
            continue
        pending = "".join(parts)
        cut = safe_cut(tok, pending, allowed)
        if cut:
            yield from tok.encode(pending[:cut], allowed_special, disallowed_special)
        parts = [pending[cut:]]
        size = len(pending) - cut
        threshold = max(buffer_chars, 2 * size)  # one long chunk: don't rescan it every text
    yield from tok.encode("".join(parts), allowed_special, disallowed_special)
