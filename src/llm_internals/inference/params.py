"""What a request asks of the sampler: `SamplingParams`, validated when it is made.

The defaults sample from the model's distribution unchanged (temperature 1, no truncation, no
penalties). `temperature=0` means greedy decoding (argmax). Ranges follow the conventions users
already know: HF transformers for `repetition_penalty` (> 0, 1 = off) and `top_k`/`top_p`/`min_p`,
the OpenAI API for `frequency_penalty` and `presence_penalty` (each in [-2, 2], 0 = off).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llm_internals.errors import LLMInternalsError

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts 64-bit seeds
# The positive normal float32 range. The sampler divides float32 logits (|z| < 3.4e38) by the
# repetition penalty in float64; a penalty inside this range keeps z / r and z * r below 1.2e77,
# far from float64's 1.8e308 (1e-40 would not survive float32, 1e-320 not even float64).
FLOAT32_TINY = 1.1754943508222875e-38
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings; invalid values raise LLMInternalsError naming the field.

    temperature: >= 0; logits are divided by it (0 = greedy, take the argmax). Any positive
      value works: the sampler divides in float64 after subtracting the row maximum, so a
      temperature of 1e-44 gives the greedy limit instead of overflowing.
    top_k: keep the k most likely tokens (ties with the k-th are kept too); 0 = off.
    top_p: keep the smallest set of most likely tokens whose mass reaches top_p; in (0, 1]; the
      most likely token is always kept (so 1e-300 is greedy in effect, as in HF).
    min_p: keep tokens with probability >= min_p * (probability of the most likely); in [0, 1].
    repetition_penalty: HF/CTRL style, on every token seen in prompt or output; 1 = off; in
      [1.2e-38, 3.4e38], the positive normal float32 range (see FLOAT32_TINY).
    frequency_penalty, presence_penalty: OpenAI style, on output tokens; in [-2, 2], 0 = off.
    seed: seeds this request's own torch.Generator, so its draws do not depend on the batch.
    stop_token_ids: generation ends when one of these is sampled (it is not part of the text).
    stop: strings that end generation when they appear in the decoded output, even across token
      boundaries; the output is cut just before the stop string.
    max_tokens: most tokens to generate per sample, >= 1 (the serving engine reads it; the
      `generate` function takes its own `max_new_tokens` argument instead).
    n: samples per request, >= 1 (parallel sampling in the serving engine; the samples share the
      prompt's KV blocks).
    ignore_eos: keep generating after the end-of-text token (benchmarks use it to fix lengths).
    adapter: the LoRA adapter this request runs with in the serving engine (a name the model
      was given with adapters.multi.attach_adapters; None: the base model).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    max_tokens: int = 16
    n: int = 1
    ignore_eos: bool = False
    adapter: str | None = None

    def __post_init__(self) -> None:
        if self.adapter is not None and not isinstance(self.adapter, str):
            raise LLMInternalsError(
                f"sampling parameter adapter must be a name, got {self.adapter!r}"
            )
        _number(self, "temperature", low=0.0, hint="0 means greedy decoding; 1 leaves logits as is")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise LLMInternalsError(
                f"sampling parameter top_k must be an integer >= 0, got {self.top_k!r}",
                hint="0 turns top-k off",
            )
        _number(self, "top_p", low=0.0, high=1.0, low_open=True, hint="1 turns top-p off")
        _number(self, "min_p", low=0.0, high=1.0, hint="0 turns min-p off")
        _number(
            self,
            "repetition_penalty",
            low=FLOAT32_TINY,
            high=FLOAT32_MAX,
            hint="1 turns it off (--repetition-penalty 1); 1.1-1.3 are usual; the range is that "
            "of positive normal float32 numbers, beyond which the penalty overflows",
        )
        _number(self, "frequency_penalty", low=-2.0, high=2.0, hint="0 turns it off")
        _number(self, "presence_penalty", low=-2.0, high=2.0, hint="0 turns it off")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):  # fmt: skip
            raise LLMInternalsError(
                f"sampling parameter seed must be an integer in [0, 2**64 - 1] or None, "
                f"got {self.seed!r}"
            )
        _positive_int(self, "max_tokens")
        _positive_int(self, "n")
        if not isinstance(self.ignore_eos, bool):
            raise LLMInternalsError(
                f"sampling parameter ignore_eos must be true or false, got {self.ignore_eos!r}"
            )
        object.__setattr__(self, "stop_token_ids", _token_ids(self.stop_token_ids))
        object.__setattr__(self, "stop", _stop_strings(self.stop))

    @property
    def greedy(self) -> bool:
        """Temperature 0: always take the most likely token, no randomness."""
        return self.temperature == 0.0

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


def _number(
    params: SamplingParams,
    name: str,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    hint: str | None = None,
) -> None:
    value = getattr(params, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        low_bracket = "(" if low_open else "["
        high_text = "inf)" if high == math.inf else f"{high:.3g}]"
        raise LLMInternalsError(
            f"sampling parameter {name} must be a number in {low_bracket}{low:.3g}, {high_text}, "
            f"got {value!r}",
            hint=hint,
        )
    object.__setattr__(params, name, float(value))


def _positive_int(params: SamplingParams, name: str) -> None:
    value = getattr(params, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LLMInternalsError(f"sampling parameter {name} must be an integer >= 1, got {value!r}")


def _token_ids(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else _iterable(value, "stop_token_ids")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise LLMInternalsError(
                f"sampling parameter stop_token_ids must hold integers >= 0, got {item!r}"
            )
    return tuple(items)


def _stop_strings(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _iterable(value, "stop")
    for item in items:
        if not isinstance(item, str) or item == "":
            raise LLMInternalsError(
                f"sampling parameter stop must hold non-empty strings, got {item!r}"
            )
    return tuple(items)


def _iterable(value: Any, name: str) -> list[Any]:
    if not isinstance(value, Iterable):
        raise LLMInternalsError(
            f"sampling parameter {name} must be a list, got {type(value).__name__}"
        )
    return list(value)
