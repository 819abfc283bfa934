"""tiktoken rank files: one line per token, "<base64 of the token's bytes> <rank>".

The rank is the token id and also its merge priority: tiktoken merges any adjacent pair whose
concatenated bytes are a token, lowest rank first. A rank file carries no pre-tokenization
pattern and no special tokens; those come from the caller (default pattern: "gpt4").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_text, read_text
from llm_internals.tokenizer.token_ids import MAX_TOKEN_ID
from llm_internals.tokenizer.tokenizer import Tokenizer


def parse_rank_file(path: Path, text: str) -> dict[bytes, int]:
    """Parse a rank file; malformed lines, duplicate tokens or duplicate ranks are errors."""
    ranks: dict[bytes, int] = {}
    seen_ranks: dict[int, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise LLMInternalsError(
                f"{path}: line {line_no} should be '<base64 token> <rank>', got {line[:60]!r}",
                hint="the file may be truncated or not a tiktoken rank file",
            )
        try:
            token = base64.b64decode(parts[0], validate=True)
        except binascii.Error:
            raise LLMInternalsError(
                f"{path}: line {line_no} has invalid base64 {parts[0][:40]!r}"
            ) from None
        if not (parts[1].isascii() and parts[1].isdigit()):
            raise LLMInternalsError(f"{path}: line {line_no} has non-integer rank {parts[1]!r}")
        rank = int(parts[1])
        if rank > MAX_TOKEN_ID:
            raise LLMInternalsError(
                f"{path}: line {line_no} has rank {rank}, above the largest token id {MAX_TOKEN_ID}"
            )
        if not token:
            raise LLMInternalsError(f"{path}: line {line_no} has an empty token")
        if rank in seen_ranks:
            raise LLMInternalsError(
                f"{path}: duplicate rank {rank} on lines {seen_ranks[rank]} and {line_no}"
            )
        if token in ranks:
            raise LLMInternalsError(f"{path}: token {token!r} appears twice (line {line_no})")
        seen_ranks[rank] = line_no
        ranks[token] = rank
    if not ranks:
        raise LLMInternalsError(f"{path}: the rank file has no tokens")
    return ranks


def tokenizer_from_ranks(
    ranks: Mapping[bytes, int], pattern: str, special_tokens: Mapping[str, int] | None
) -> Tokenizer:
    return Tokenizer(
        {rank: token for token, rank in ranks.items()},
        special_tokens=special_tokens,
        pattern=pattern,
        merge_ranks="token_id",
        ignore_merges=True,
    )


def from_tiktoken(
    source: str | Path | Mapping[bytes, int],
    pattern: str = "gpt4",
    special_tokens: Mapping[str, int] | None = None,
) -> Tokenizer:
    if isinstance(source, Mapping):
        return tokenizer_from_ranks(source, pattern, special_tokens)
    path = Path(source)
    return tokenizer_from_ranks(
        parse_rank_file(path, read_text(path, "tokenizer file")), pattern, special_tokens
    )


def to_tiktoken(tok: Tokenizer, path: Path | None = None) -> dict[bytes, int]:
    """Mergeable ranks for tiktoken (ordinary tokens only; ids become ranks)."""
    ranks = {token: i for i, token in sorted(tok.vocab.items())}
    if path is not None:
        lines = [f"{base64.b64encode(t).decode('ascii')} {r}" for t, r in ranks.items()]
        atomic_write_text(path, "\n".join(lines) + "\n")
    return ranks
