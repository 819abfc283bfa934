"""Our own tokenizer file: versioned JSON holding everything needed to encode and decode.

    {"format": "llm-internals-tokenizer", "version": 1,
     "pattern": "<regex>", "merge_ranks": "merges" | "token_id", "ignore_merges": false,
     "normalization": null | "NFC" | "NFKC",
     "vocab": [[id, "<base64 bytes>"], ...], "merges": [[left_id, right_id], ...],
     "special_tokens": {"<|endoftext|>": 8191}}

Token bytes are base64 because tokens need not be valid UTF-8 on their own.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_text
from llm_internals.tokenizer.formats import field
from llm_internals.tokenizer.token_ids import MAX_TOKEN_ID, is_token_id
from llm_internals.tokenizer.tokenizer import NORMALIZATIONS, Tokenizer

FORMAT_NAME = "llm-internals-tokenizer"
FORMAT_VERSION = 1


def to_own_dict(tok: Tokenizer) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "pattern": tok.pattern,
        "merge_ranks": tok.merge_ranks,
        "ignore_merges": tok.ignore_merges,
        "normalization": tok.normalization,
        "vocab": [
            [i, base64.b64encode(token).decode("ascii")] for i, token in sorted(tok.vocab.items())
        ],
        "merges": [] if tok.merge_ranks == "token_id" else [list(m) for m in tok.merges],
        "special_tokens": dict(tok.special_tokens),
    }


def save_json(tok: Tokenizer, path: Path) -> None:
    atomic_write_text(path, json.dumps(to_own_dict(tok), ensure_ascii=False, indent=0) + "\n")


def tokenizer_from_own_dict(obj: dict[str, Any], path: Path) -> Tokenizer:
    """Rebuild a Tokenizer from our JSON, checking every field."""
    version = field(obj, "version", int, path)
    if version != FORMAT_VERSION:
        raise LLMInternalsError(
            f"{path}: tokenizer format version {version} is not supported "
            f"(this llm-internals reads version {FORMAT_VERSION})"
        )
    pattern = field(obj, "pattern", str, path)
    merge_ranks = field(obj, "merge_ranks", str, path)
    if merge_ranks not in ("merges", "token_id"):
        raise LLMInternalsError(f"{path}: field 'merge_ranks' has unknown value {merge_ranks!r}")
    ignore_merges = field(obj, "ignore_merges", bool, path)
    normalization = obj.get("normalization")  # optional: absent means none
    if normalization not in NORMALIZATIONS:
        raise LLMInternalsError(
            f"{path}: field 'normalization' is {json.dumps(normalization)}; "
            'expected null, "NFC" or "NFKC"'
        )
    vocab: dict[int, bytes] = {}
    for n, entry in enumerate(field(obj, "vocab", list, path)):
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], str):
            raise LLMInternalsError(f"{path}: vocab[{n}] should be [id, base64 bytes]")
        if not is_token_id(entry[0]):
            raise LLMInternalsError(
                f"{path}: vocab[{n}] has id {json.dumps(entry[0])}, "
                f"not a token id (an integer in 0..{MAX_TOKEN_ID})"
            )
        try:
            token = base64.b64decode(entry[1], validate=True)
        except binascii.Error:
            raise LLMInternalsError(f"{path}: vocab[{n}] has invalid base64 {entry[1]!r}") from None
        if entry[0] in vocab:
            raise LLMInternalsError(f"{path}: vocab has id {entry[0]} twice")
        vocab[entry[0]] = token
    merges = []
    for n, entry in enumerate(field(obj, "merges", list, path)):
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, int) for x in entry)
        ):
            raise LLMInternalsError(f"{path}: merges[{n}] should be [left id, right id]")
        merges.append((entry[0], entry[1]))
    specials = field(obj, "special_tokens", dict, path)
    for name, token_id in specials.items():
        if not name or not is_token_id(token_id):
            raise LLMInternalsError(
                f"{path}: special_tokens[{name!r}] is {json.dumps(token_id)}: a special token "
                f"needs a non-empty name and an id in 0..{MAX_TOKEN_ID}"
            )
    try:
        return Tokenizer(
            vocab,
            merges,
            specials,
            pattern,
            merge_ranks=merge_ranks,  # type: ignore[arg-type]
            ignore_merges=ignore_merges,
            normalization=normalization,
        )
    except LLMInternalsError as e:
        raise LLMInternalsError(f"{path}: {e.message}", hint=e.hint) from None
