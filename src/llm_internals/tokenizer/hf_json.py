"""HF `tokenizer.json` import and export for byte-level BPE (GPT-2, Llama-3, Qwen-style files).

What we read: model.type "BPE" with vocab (token text in the byte-level alphabet -> id) and
merges (["a", "b"] pairs or legacy "a b" strings, in rank order), model.ignore_merges,
added_tokens (become our special tokens), a null/NFC/NFKC normalizer, and a pre_tokenizer that
is either ByteLevel with use_regex (the GPT-2 pattern) or Sequence[Split(Regex, Isolated),
ByteLevel(use_regex=false)] (a custom pattern, as in Llama 3). Anything else (other
normalizers, add_prefix_space, dropout) is refused with an error naming the field, rather than
silently encoding differently. Post-processors (e.g. Llama's BOS template) are not applied:
callers add such tokens themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import regex

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write_text, parse_json, read_text
from llm_internals.tokenizer.byte_level import UNICODE_TO_BYTE, token_to_text
from llm_internals.tokenizer.formats import field
from llm_internals.tokenizer.pretokenize import GPT2_PATTERN, PATTERNS
from llm_internals.tokenizer.token_ids import MAX_TOKEN_ID, is_token_id
from llm_internals.tokenizer.tokenizer import Tokenizer

# One quantifier means different things in the two engines: `X{1,3}+` is possessive in `regex`
# (and tiktoken) but a repeated group `(?:X{1,3})+` in Oniguruma, HF's engine. We translate it
# at the boundary so that a pattern cuts the same text the same way on both sides.
_BOUNDED_PLUS = regex.compile(r"(\\p\{\w+\}|\[(?:\\.|[^\]])*\]|\\.|[^\\()|])(\{\d+(?:,\d*)?\})\+")


def pattern_to_hf(pattern: str) -> str:
    """Our (regex/tiktoken) pattern for Oniguruma: possessive `X{m,n}+` becomes `(?>X{m,n})`."""
    return _BOUNDED_PLUS.sub(r"(?>\1\2)", pattern)


def pattern_from_hf(pattern: str) -> str:
    """An Oniguruma pattern for `regex`: `X{m,n}+` (a repeated group there) -> `(?:X{m,n})+`;
    our own exports of named patterns come back as those names' patterns."""
    for named in set(PATTERNS.values()):
        if pattern == pattern_to_hf(named):
            return named
    return _BOUNDED_PLUS.sub(r"(?:\1\2)+", pattern)


def _pattern_of(pre: Any, path: Path) -> str:
    """The pre-tokenization regex an HF pre_tokenizer section amounts to."""
    if not isinstance(pre, dict):
        raise LLMInternalsError(f"{path}: field 'pre_tokenizer' is missing or not an object")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise LLMInternalsError(
                f"{path}: pre_tokenizer.add_prefix_space=true is not supported",
                hint="byte-level BPE here encodes text as given (GPT-2 files use false)",
            )
        if not pre.get("use_regex", True):
            raise LLMInternalsError(f"{path}: ByteLevel pre_tokenizer without a regex split")
        return GPT2_PATTERN
    if kind == "Sequence":
        steps = field(pre, "pretokenizers", list, path, "pre_tokenizer")
        if (
            len(steps) == 2
            and isinstance(steps[0], dict)
            and steps[0].get("type") == "Split"
            and isinstance(steps[0].get("pattern"), dict)
            and "Regex" in steps[0]["pattern"]
            and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert", False)
            and isinstance(steps[1], dict)
            and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True)
            and not steps[1].get("add_prefix_space", False)
        ):
            regex_source = steps[0]["pattern"]["Regex"]
            if not isinstance(regex_source, str):
                raise LLMInternalsError(
                    f"{path}: pre_tokenizer.pretokenizers[0].pattern.Regex should be a string"
                )
            return pattern_from_hf(regex_source)
    raise LLMInternalsError(
        f"{path}: unsupported pre_tokenizer {json.dumps(pre)[:200]}",
        hint="supported: ByteLevel(use_regex) or Sequence[Split(Regex, Isolated), ByteLevel]",
    )


def tokenizer_from_hf_dict(obj: Mapping[str, Any], path: Path) -> Tokenizer:
    """Build a Tokenizer from a parsed HF tokenizer.json."""
    model = field(obj, "model", dict, path)
    if model.get("type", "BPE") != "BPE":
        raise LLMInternalsError(f"{path}: model.type {model.get('type')!r} is not BPE")
    normalizer = obj.get("normalizer")
    normalization = None
    if normalizer is not None:
        normalization = normalizer.get("type") if isinstance(normalizer, dict) else None
        if normalization not in ("NFC", "NFKC"):
            raise LLMInternalsError(
                f"{path}: normalizer {json.dumps(normalizer)[:120]} is not supported "
                "(field 'normalizer'; supported: null, NFC, NFKC)"
            )
    if model.get("dropout"):
        raise LLMInternalsError(f"{path}: BPE dropout is not supported (model.dropout)")
    pattern = _pattern_of(obj.get("pre_tokenizer"), path)
    added = {}
    added_tokens = obj.get("added_tokens") or []
    if not isinstance(added_tokens, list):
        raise LLMInternalsError(f"{path}: field 'added_tokens' should be a list")
    for n, entry in enumerate(added_tokens):
        content = field(entry, "content", str, path, f"added_tokens[{n}]")
        token_id = field(entry, "id", int, path, f"added_tokens[{n}]")
        if not content or not is_token_id(token_id):
            raise LLMInternalsError(
                f"{path}: added_tokens[{n}] ({content!r}, id {token_id}): a special token "
                f"needs non-empty content and an id in 0..{MAX_TOKEN_ID}"
            )
        added[content] = token_id
    vocab: dict[int, bytes] = {}
    id_of_text = field(model, "vocab", dict, path, "model")
    for text, token_id in id_of_text.items():
        if not is_token_id(token_id):
            raise LLMInternalsError(
                f"{path}: model.vocab[{text!r}] is {json.dumps(token_id)}, "
                f"not a token id (an integer in 0..{MAX_TOKEN_ID})"
            )
        if text in added:
            continue
        if not text:
            raise LLMInternalsError(f"{path}: model.vocab has an empty token (id {token_id})")
        if token_id in vocab:
            raise LLMInternalsError(
                f"{path}: model.vocab gives id {token_id} to two tokens "
                f"({token_to_text(vocab[token_id])!r} and {text!r})"
            )
        try:
            vocab[token_id] = bytes(UNICODE_TO_BYTE[ch] for ch in text)
        except KeyError:
            raise LLMInternalsError(
                f"{path}: model.vocab token {text!r} is not in the byte-level alphabet"
            ) from None
    merges = []
    for n, entry in enumerate(field(model, "merges", list, path, "model")):
        pair = entry.split(" ") if isinstance(entry, str) else entry
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise LLMInternalsError(f"{path}: model.merges[{n}] is not a pair of tokens")
        try:
            merges.append((id_of_text[pair[0]], id_of_text[pair[1]]))
        except KeyError as e:
            raise LLMInternalsError(
                f"{path}: model.merges[{n}] uses {e.args[0]!r}, which is not in model.vocab"
            ) from None
    try:
        return Tokenizer(
            vocab,
            merges,
            added,
            pattern,
            ignore_merges=bool(model.get("ignore_merges", False)),
            normalization=normalization,
        )
    except LLMInternalsError as e:
        raise LLMInternalsError(f"{path}: {e.message}", hint=e.hint) from None


def from_hf(source: str | Path | Mapping[str, Any]) -> Tokenizer:
    """From an HF tokenizer.json path, a folder holding one, or the parsed dict."""
    if isinstance(source, Mapping):
        return tokenizer_from_hf_dict(source, Path("<tokenizer.json dict>"))
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    return tokenizer_from_hf_dict(parse_json(path, read_text(path, "tokenizer file")), path)


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": use_regex,
    }


def to_hf(tok: Tokenizer, path: Path | None = None) -> dict[str, Any]:
    """HF tokenizer.json content for `tok`; `tokenizers.Tokenizer.from_str` loads it."""
    if tok.pattern == GPT2_PATTERN:
        pre: dict[str, Any] = _byte_level(True)
    else:
        pre = {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": pattern_to_hf(tok.pattern)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                _byte_level(False),
            ],
        }
    vocab = {token_to_text(token): i for i, token in sorted(tok.vocab.items())}
    vocab.update(tok.special_tokens)
    obj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None if tok.normalization is None else {"type": tok.normalization},
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": _byte_level(True),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": tok.ignore_merges,
            "vocab": vocab,
            "merges": [
                [token_to_text(tok.vocab[a]), token_to_text(tok.vocab[b])] for a, b in tok.merges
            ],
        },
    }
    if path is not None:
        atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    return obj
