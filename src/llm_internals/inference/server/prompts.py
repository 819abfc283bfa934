"""From a validated request body to what the engine runs: prompt token ids, the max_tokens each
sample may generate, and SamplingParams, within the server's limits.

Limits (ServerLimits; each can be set by `llm-internals serve`):
    max_concurrent_requests  prompts in flight at once (a request with several prompts counts
                             each); more get 429, a single request with more gets 400
    max_prompt_tokens        longest prompt accepted (default: context - 1); longer gets 400
    max_tokens               largest max_tokens accepted (default: context - 1); larger gets 400
    max_n                    largest n (default: the engine's max_num_seqs, all samples of a
                             request run together); larger gets 400
    max_prompt_chars         longest prompt text, checked before tokenizing (default:
                             max_prompt_tokens x the longest token's length, see below)
A text of C characters has at least C / L tokens when no token is longer than L characters, so
a prompt longer than max_prompt_tokens x L characters is surely too long: it is refused at once,
without spending seconds tokenizing it (a normalizing tokenizer may merge up to 3 characters
into one, so L is tripled for it).
A prompt plus max_tokens must fit in the model's context (400 otherwise, as OpenAI does). When
max_tokens is not given: 16 for completions (OpenAI's default), and for chat whatever is left of
the context; both capped to fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import SamplingParams

COMPLETION_DEFAULT_MAX_TOKENS = 16


class FieldError(LLMInternalsError):
    """A request value the server cannot accept; `field` is the request field to name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ServerLimits:
    """See the module docstring; None means "derive from the model and engine"."""

    max_concurrent_requests: int = 256
    max_prompt_tokens: int | None = None
    max_tokens: int | None = None
    max_n: int | None = None
    max_prompt_chars: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_concurrent_requests", "max_prompt_tokens", "max_tokens", "max_n",
                     "max_prompt_chars"):  # fmt: skip
            value = getattr(self, name)
            if value is None and name != "max_concurrent_requests":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LLMInternalsError(f"server limit {name} must be an integer >= 1, "
                                        f"got {value!r}")  # fmt: skip

    def resolved(self, context: int, max_num_seqs: int, tokenizer: Any) -> ServerLimits:
        """The limits with every None filled in from the model's context, the engine and the
        tokenizer."""
        max_prompt_tokens = min(self.max_prompt_tokens or context - 1, context - 1)
        return replace(
            self,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens=min(self.max_tokens or context - 1, context - 1),
            max_n=min(self.max_n or max_num_seqs, max_num_seqs),
            max_prompt_chars=self.max_prompt_chars
            or max_prompt_tokens * longest_token_chars(tokenizer),
        )


def longest_token_chars(tokenizer: Any) -> int:
    """An upper bound on the characters of prompt text one token can stand for (see the module
    docstring): the longest token in bytes (a UTF-8 character is at least one byte), special
    tokens included; 1 for a character tokenizer; 256 when the tokenizer does not say."""
    if hasattr(tokenizer, "chars"):  # CharTokenizer
        return max((len(c) for c in tokenizer.chars), default=1)
    vocab = getattr(tokenizer, "vocab", None)
    if not isinstance(vocab, dict) or not vocab:
        return 256
    specials = getattr(tokenizer, "special_tokens", None) or {}
    longest = max(max(map(len, vocab.values())), max(map(len, specials), default=0))
    return longest * (3 if getattr(tokenizer, "normalization", None) else 1)


def check_prompt_chars(text: str, field: str, limits: ServerLimits) -> None:
    """Refuse a prompt text that surely has more than max_prompt_tokens tokens (before it is
    tokenized, which would take long)."""
    if len(text) > limits.max_prompt_chars:
        raise FieldError(field, f"{field} has {len(text)} characters, more than this server's "
                         f"limit of {limits.max_prompt_chars} (at most "
                         f"{limits.max_prompt_tokens} tokens)")  # fmt: skip


def encode_text(tokenizer: Any, text: str, field: str) -> list[int]:
    """Token ids of a prompt text; special-token text (e.g. `<|endoftext|>`) becomes the special
    token, as chat templates need."""
    try:
        try:
            ids = list(tokenizer.encode(text, allowed_special="all"))
        except TypeError:  # a tokenizer without special tokens (e.g. characters)
            ids = list(tokenizer.encode(text))
    except LLMInternalsError as err:
        raise FieldError(field, f"{field}: {err.message}") from None
    except (KeyError, ValueError) as err:  # e.g. a character the tokenizer has never seen
        raise FieldError(field, f"{field}: the tokenizer cannot encode it ({err})") from None
    if not ids:
        raise FieldError(field, f"{field} is empty: generation needs at least one token")
    return ids


def plan_max_tokens(
    kind: str,
    prompt_lengths: list[tuple[str, int]],
    requested: int | None,
    limits: ServerLimits,
    context: int,
) -> int:
    """max_tokens for every sample of the request; FieldError when a limit is exceeded."""
    for field, length in prompt_lengths:
        if length == 0:
            raise FieldError(field, f"{field} is empty: generation needs at least one token")
        if length > limits.max_prompt_tokens:
            raise FieldError(
                field,
                f"{field} has {length} tokens, more than this server's limit "
                f"of {limits.max_prompt_tokens} (the model's context is {context})",
            )
    longest = max(length for _, length in prompt_lengths)
    room = context - longest
    if requested is None:
        default = COMPLETION_DEFAULT_MAX_TOKENS if kind == "completion" else room
        return max(1, min(default, room, limits.max_tokens))
    if requested > limits.max_tokens:
        raise FieldError("max_tokens", f"max_tokens must be at most {limits.max_tokens}, "
                         f"got {requested}")  # fmt: skip
    if requested > room:
        raise FieldError("max_tokens", f"max_tokens={requested} does not fit: the model's "
                         f"context is {context} tokens and the prompt has {longest}, leaving "
                         f"{room}")  # fmt: skip
    return requested


def sampling_params(body: Any, max_tokens: int, extra_stop: tuple[str, ...]) -> SamplingParams:
    """SamplingParams from the request's fields (top_k -1 means off, as in vLLM)."""
    try:
        return SamplingParams(
            temperature=body.temperature,
            top_k=max(body.top_k, 0),
            top_p=body.top_p,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            frequency_penalty=body.frequency_penalty,
            presence_penalty=body.presence_penalty,
            seed=body.seed,
            stop=body.stop_strings() + tuple(s for s in extra_stop if s not in body.stop_strings()),
            stop_token_ids=tuple(body.stop_token_ids or ()),
            max_tokens=max_tokens,
            n=body.n,
            ignore_eos=body.ignore_eos,
        )
    except LLMInternalsError as err:
        match = re.search(r"sampling parameter (\w+)", err.message)
        field = match.group(1) if match else "body"
        if field == "max_tokens" and getattr(body, "max_completion_tokens", None) is not None:
            field = "max_completion_tokens"
        raise FieldError(field, err.message) from None
