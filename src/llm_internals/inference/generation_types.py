"""What generation hands back: per-token stream chunks, per-prompt results, and timings."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sequence_core import ENGINE_ONLY_REASONS
from llm_internals.inference.sequence_core import FINISH_REASONS as ALL_FINISH_REASONS

# generate's finish reasons; sequence_core.FINISH_REASONS says what each means.
FINISH_REASONS = tuple(r for r in ALL_FINISH_REASONS if r not in ENGINE_ONLY_REASONS)
GREEDY = SamplingParams(temperature=0.0)


@dataclass
class StreamChunk:
    """One sampled token of sequence `index`, the text it made safe to show (may be ""), and the
    finish reason when this token ended the sequence."""

    index: int
    token_id: int
    text: str
    finish_reason: str | None = None


@dataclass
class Timing:
    """Seconds spent in the first forward (prefill) and in all later steps (decode)."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    tokens: int = 0  # tokens sampled, all sequences together

    @property
    def tokens_per_s(self) -> float:
        total = self.prefill_s + self.decode_s
        return self.tokens / total if total > 0 else 0.0

    def add_step(self, seconds: float, tokens: int, prefill: bool) -> None:
        """Book one forward-and-sample step."""
        if prefill:
            self.prefill_s = seconds
        else:
            self.decode_s += seconds
            self.decode_steps += 1
        self.tokens += tokens


@dataclass
class GenerationResult:
    """One prompt's output. token_ids excludes an eos or stop token; text is None when no
    tokenizer was given."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str | None
    finish_reason: str
    timing: Timing = field(default_factory=Timing)
