"""Turning generated token ids into text as they arrive, and knowing when to stop.

Two problems make this harder than `decode(ids)` per token:

1. A token is not always whole characters. Byte-level BPE (GPT-2, Llama 3) can split one UTF-8
   character (an emoji is 4 bytes) over several tokens; decoding the first piece alone gives the
   replacement character U+FFFD. SentencePiece-style decoders drop the leading space of the first
   token in a decode call, so decoding tokens one by one loses spaces.
   `IncrementalDetokenizer` decodes a short window of recent tokens and emits only the new suffix,
   and holds text back while it ends in U+FFFD (an incomplete character).
2. A stop string can span tokens ("###" may arrive as "#" then "##"), so it must be searched for
   in the decoded text, not per token. `StopChecker` keeps the output text, finds the earliest stop
   string, cuts the text just before it, and for streaming releases only text that cannot turn
   out to be the start of a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_TOKENS = 5  # prompt tokens kept as decoding context for the first output token


class IncrementalDetokenizer:
    """Decode one token at a time with `decode(list_of_ids) -> str` from any tokenizer.

    Keeps two offsets into the ids: text is decoded from `prefix_offset` (a little context before
    the new tokens) and compared with the decode of the same window without the new tokens; the
    difference is the new text. Cost per token is a decode of a few tokens, not of the whole
    output.
    """

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: Sequence[int] = ()) -> None:
        self.decode = decode
        self.ids: list[int] = list(prompt_ids)[-CONTEXT_TOKENS:]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""  # all output text emitted so far

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ("" while a character is incomplete)."""
        self.ids.append(int(token_id))
        prefix_text = self.decode(self.ids[self.prefix_offset : self.read_offset])
        window_text = self.decode(self.ids[self.prefix_offset :])
        if len(window_text) <= len(prefix_text) or window_text.endswith(REPLACEMENT_CHAR):
            return ""
        new_text = window_text[len(prefix_text) :]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        self.text += new_text
        return new_text

    def flush(self) -> str:
        """At the end: whatever is still held back (e.g. a truly incomplete character)."""
        prefix_text = self.decode(self.ids[self.prefix_offset : self.read_offset])
        window_text = self.decode(self.ids[self.prefix_offset :])
        rest = window_text[len(prefix_text) :] if window_text.startswith(prefix_text) else ""
        self.prefix_offset = self.read_offset = len(self.ids)
        self.text += rest
        return rest


@dataclass(frozen=True)
class StopReason:
    """Why generation stopped: `kind` is "stop_token" or "stop_string"; `value` what matched."""

    kind: str
    value: int | str


class StopChecker:
    """Watches one request's output (token ids and their decoded text) for its stop conditions.

    `text` is the output so far with a matched stop string and everything after it removed (the
    OpenAI convention: the stop sequence is not returned). `take_ready_text()` gives the part of
    `text` that is safe to stream now.
    """

    def __init__(self, stop: Iterable[str] = (), stop_token_ids: Iterable[int] = ()) -> None:
        self.stop = tuple(s for s in stop if s)
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        self.longest = max((len(s) for s in self.stop), default=0)
        self.text = ""
        self.reason: StopReason | None = None
        self._streamed = 0

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def update(self, token_id: int, new_text: str) -> bool:
        """Record one generated token and the text it added; True once a stop condition holds."""
        if self.stopped:
            return True
        if int(token_id) in self.stop_token_ids:
            self.reason = StopReason("stop_token", int(token_id))
            return True
        # A match must end inside new_text, so it starts at most longest - 1 characters earlier.
        search_from = max(0, len(self.text) - self.longest + 1)
        self.text += new_text
        earliest: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, search_from)
            if at >= 0 and (earliest is None or at < earliest[0]):
                earliest = (at, s)
        if earliest is not None:
            self.text = self.text[: earliest[0]]
            self.reason = StopReason("stop_string", earliest[1])
        return self.stopped

    def held_back(self) -> int:
        """Characters at the end of `text` that could be the beginning of a stop string."""
        if self.stopped:
            return 0
        for length in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-length:]
            if any(s.startswith(tail) for s in self.stop):
                return length
        return 0

    def take_ready_text(self, final: bool = False) -> str:
        """Text not yet streamed that no later token can turn into part of a stop string."""
        end = len(self.text) if final else len(self.text) - self.held_back()
        ready = self.text[self._streamed : end]
        self._streamed = max(self._streamed, end)
        return ready
