"""Pre-tokenization: cut text into chunks that BPE never merges across.

Byte-level BPE runs inside each chunk separately, so a token can never span a chunk boundary:
"dog." and "dog!" share the token " dog" instead of learning " dog." and " dog!". The cut is a
regular expression (run with the `regex` module, which knows Unicode classes such as \\p{L}):

- "gpt2": the GPT-2 pattern (also HF `tokenizers`' ByteLevel pre-tokenizer): contractions,
  an optional space plus letters, an optional space plus digits, an optional space plus other
  symbols, and whitespace (a run of spaces keeps its last space for the following word).
- "gpt4" (alias "cl100k"): the cl100k_base pattern of tiktoken: case-insensitive contractions,
  at most 3 digits per chunk, newlines grouped separately from spaces.
- any other string is compiled as a custom pattern. It may have no capturing groups (`findall`
  would return the groups instead of the chunks), and matching it has a time limit, so that
  catastrophic backtracking (`(a|aa)+$` on a long run of a's) is an error instead of a hang.
  A tokenizer's pattern must also match every character (the chunks joined give the text
  back; a gap would silently drop characters): `must_cover=True` checks that on a probe text
  when the tokenizer is loaded and again on every text it cuts. Training may count chunks of
  a pattern that skips text (CS336's example splits on whitespace with `\\S+`).

Speed: for text that is pure ASCII, each named pattern has a twin written with ASCII classes
for the standard library `re` engine (about 2.5x faster here). `\\p{L}` becomes `[A-Za-z]`,
`\\p{N}` becomes `[0-9]`, and `\\s` becomes `[\\t-\\r ]` (Unicode White_Space within ASCII; `re`'s
own `\\s` would also match \\x1c-\\x1f). The twins give identical chunks on ASCII text (tested).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import regex

from llm_internals.errors import LLMInternalsError

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

_GPT2_ASCII = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\t-\r A-Za-z0-9]+"""
    r"""|[\t-\r ]+(?![^\t-\r ])|[\t-\r ]+"""
)
_GPT4_ASCII = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{1,3}+"""
    r"""| ?[^\t-\r A-Za-z0-9]++[\r\n]*+|[\t-\r ]++$|[\t-\r ]*[\r\n]"""
    r"""|[\t-\r ]+(?![^\t-\r ])|[\t-\r ]"""
)

PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "cl100k": GPT4_PATTERN}
_ASCII_TWINS: dict[str, str] = {GPT2_PATTERN: _GPT2_ASCII, GPT4_PATTERN: _GPT4_ASCII}


def resolve_pattern(pattern: str) -> str:
    """The regular expression for a pattern name ("gpt2", "gpt4", "cl100k") or a custom string."""
    return PATTERNS.get(pattern, pattern)


def pattern_name(pattern: str) -> str | None:
    """The short name of a named pattern string (None for custom patterns)."""
    for name, value in PATTERNS.items():
        if value == pattern:
            return name
    return None


MAX_PATTERN_CHARS = 10_000
# A probe text with every kind of character the named patterns handle: a custom pattern that
# leaves any of it unmatched is refused when the tokenizer is loaded.
PROBE_TEXT = (
    "Hello, World! It's 2024: 1234567 cats\tand  dogs\r\n\n  end   \x00\x1f\x7f\u00a0"
    "naïve café e\u0301 中文字符 日本語 한국어 Русский العربية हिन्दी 👋🏽 🧑\u200d💻 🇫🇷 "
    "#$%&()*+-./;<=>?@[\\]^_`{|}~ \u2028\u3000x"
)


def match_seconds(n_chars: int) -> float:
    """The time limit for cutting a text of n_chars with a custom pattern: 1 s plus 10 s per
    million characters (the named patterns cut a million characters in about 0.2 s)."""
    return 1.0 + 10.0 * n_chars / 1e6


@dataclass(frozen=True)
class Pretokenizer:
    """A compiled pre-tokenization pattern with its ASCII fast path, if it has one. Named
    patterns are `trusted` (known to cover every text quickly); custom ones are checked."""

    pattern: str
    unicode_regex: regex.Pattern
    ascii_regex: re.Pattern | regex.Pattern | None
    trusted: bool = True
    must_cover: bool = False

    def split(self, text: str) -> list[str]:
        """All chunks of `text`, in order; with must_cover, joined they give `text` back
        (checked for custom patterns: a gap raises an error naming the character it would
        drop)."""
        if self.ascii_regex is not None and text.isascii():
            return self.ascii_regex.findall(text)
        if self.trusted:
            return self.unicode_regex.findall(text)
        try:
            chunks = self.unicode_regex.findall(text, timeout=match_seconds(len(text)))
        except TimeoutError:
            raise LLMInternalsError(
                f"pre-tokenization pattern {self.pattern[:80]!r} took more than "
                f"{match_seconds(len(text)):.0f} s on a text of {len(text):,} characters "
                "(catastrophic backtracking?)",
                hint="simplify nested repetitions such as (a|aa)+ in the pattern",
            ) from None
        if self.must_cover and sum(map(len, chunks)) != len(text):
            self._raise_gap(text)
        return chunks

    def split_many(self, texts: Iterable[str]) -> list[list[str]]:
        """`split` of each text; all-ASCII batches run the fast regex over the list in C."""
        texts = texts if isinstance(texts, list) else list(texts)
        if self.ascii_regex is not None and all(map(str.isascii, texts)):
            return list(map(self.ascii_regex.findall, texts))
        return list(map(self.split, texts))

    def _raise_gap(self, text: str) -> None:
        end = 0
        for match in self.unicode_regex.finditer(text, timeout=match_seconds(len(text))):
            if match.start() != end:
                break
            end = match.end()
        raise LLMInternalsError(
            f"pre-tokenization pattern {self.pattern[:80]!r} does not match {text[end]!r} "
            f"(character {end} of {text[max(0, end - 20) : end + 20]!r}): "
            "it would be dropped from the tokens",
            hint="a pattern must match every character: end it with an alternative such as "
            "|\\s+|(?s:.) (or use --pattern gpt2 / gpt4)",
        )


@lru_cache(maxsize=32)
def get_pretokenizer(pattern: str = "gpt2", must_cover: bool = False) -> Pretokenizer:
    """Compile a pattern (name or custom string) once. A custom pattern that is not a valid
    regular expression or has capturing groups is a clear error; with must_cover (a
    tokenizer's pattern), so is one that leaves characters of PROBE_TEXT unmatched."""
    source = resolve_pattern(pattern)
    trusted = source in PATTERNS.values()
    if len(source) > MAX_PATTERN_CHARS:
        raise LLMInternalsError(
            f"pre-tokenization pattern has {len(source):,} characters "
            f"(at most {MAX_PATTERN_CHARS:,})"
        )
    try:
        compiled = regex.compile(source)
    except regex.error as e:
        raise LLMInternalsError(
            f"pre-tokenization pattern {pattern[:80]!r} is not a valid regular expression: {e}",
            hint=f"pass --pattern {' / '.join(PATTERNS)} or a valid `regex` expression",
        ) from e
    if compiled.groups:
        raise LLMInternalsError(
            f"pre-tokenization pattern {pattern[:80]!r} has {compiled.groups} capturing "
            "group(s): chunks would be the groups' text, not the whole matches",
            hint="write groups as (?:...) instead of (...)",
        )
    ascii_compiled = None
    twin = _ASCII_TWINS.get(source)
    if twin is not None:
        try:
            ascii_compiled = re.compile(twin)
        except re.error:  # possessive quantifiers need Python 3.11's re; `regex` always has them
            ascii_compiled = regex.compile(twin)
    pretokenizer = Pretokenizer(source, compiled, ascii_compiled, trusted, must_cover)
    if must_cover and not trusted:
        pretokenizer.split(PROBE_TEXT)  # raises if the pattern drops a character
    return pretokenizer


def split_text(text: str, pattern: str = "gpt2") -> list[str]:
    """Pre-tokenize `text` with a named or custom pattern."""
    return get_pretokenizer(pattern).split(text)
