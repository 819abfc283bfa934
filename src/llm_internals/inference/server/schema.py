"""The request bodies of the OpenAI API, as pydantic models: parsing them is validating them.

Unknown fields are rejected (as the OpenAI API does), so a misspelt parameter is a 400 naming
it rather than silently ignored. Besides the OpenAI fields, both endpoints accept the sampling
extras that vLLM also accepts (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`,
`stop_token_ids`); the openai client sends them with `extra_body={...}`. Fields the server does
not implement (`logprobs`, `suffix`, `logit_bias`, tools, ...) are rejected with a 400 that says
so, never accepted and ignored.

Types are strict, as in the OpenAI API: `"max_tokens": "5"`, `true` or `5.0`, `"stream": "yes"`
and `"n": 1.5` are 400s naming the field (only an integer may stand for a float), and NaN or
infinite numbers are refused. `stop` (up to 4 strings of up to MAX_STOP_CHARS characters) and
`stop_token_ids` (up to MAX_STOP_TOKEN_IDS ids) are capped: their cost is paid at every step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_internals.inference.params import MAX_SEED

MAX_STOP_STRINGS = 4  # as the OpenAI API
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 256
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
StopStrings = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)]


class UnsupportedField(Exception):
    """A request asked for something this server does not implement (turned into a 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The sampling parameters shared by /v1/completions and /v1/chat/completions."""

    model_config = STRICT

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    n: Annotated[int, Field(ge=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopStrings | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # extras (vLLM's names): -1 or 0 turns top_k off
    top_k: Annotated[int, Field(ge=-1)] = 0
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0)] = 1.0
    ignore_eos: bool = False
    stop_token_ids: (
        Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_STOP_TOKEN_IDS)] | None
    ) = None

    def check_supported(self) -> None:
        if self.logit_bias:
            raise UnsupportedField("logit_bias", "logit_bias is not supported by this server")
        if self.stream_options is not None and not self.stream:
            raise UnsupportedField("stream_options", "stream_options needs stream: true")

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    """POST /v1/completions: continue `prompt` (text, token ids, or a list of either)."""

    prompt: (
        str
        | TokenIds
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    echo: bool = False
    best_of: Annotated[int, Field(ge=1)] | None = None
    logprobs: Annotated[int, Field(ge=0)] | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs is not None:
            raise UnsupportedField("logprobs", "logprobs is not supported by this server")
        if self.suffix:
            raise UnsupportedField("suffix", "suffix (insertion) is not supported by this server")
        if self.best_of is not None and self.best_of != self.n:
            raise UnsupportedField(
                "best_of", f"best_of must equal n ({self.n}): ranking samples is not supported"
            )

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: one text or one list of ids per prompt."""
        prompt: Any = self.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            return [prompt]
        return list(prompt)


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions: the conversation so far; the reply is the assistant's turn."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs:
            raise UnsupportedField("logprobs", "logprobs is not supported by this server")
        if self.top_logprobs is not None:
            raise UnsupportedField("top_logprobs", "top_logprobs is not supported by this server")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise UnsupportedField(
                "max_completion_tokens", "give max_tokens or max_completion_tokens, not both"
            )

    @property
    def requested_max_tokens(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )
