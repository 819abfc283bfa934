"""The response side of the OpenAI API: completion and chat objects, streaming chunks, usage,
errors, and server-sent events.

Streaming (`stream: true`) sends `text/event-stream`: one `data: {json}` event per chunk, a blank
line after each, and `data: [DONE]` at the end. A completion chunk carries `choices[i].text`; a
chat chunk carries `choices[i].delta` (first `{"role": "assistant", "content": ""}`, then
`{"content": ...}`, last `{}` with the finish_reason). With `stream_options.include_usage` a final
chunk with `choices: []` carries the usage.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

# The engine's finish reasons (inference/sequence_core.py) in OpenAI's vocabulary: every natural
# end is "stop", every size limit "length" (max_tokens or the context window); "abort" and
# "error" (the request's logits could not be sampled) have no OpenAI name and pass through.
FINISH_REASON = {"eos": "stop", "stop": "stop", "length": "length", "context": "length",
                 "abort": "abort", "error": "error"}  # fmt: skip


def finish_reason(output: Any) -> str | None:
    return FINISH_REASON.get(output.finish_reason) if output.finished else None


def generated_tokens(output: Any) -> int:
    """Tokens the model sampled for this sample, counting an eos or stop token (which is not
    part of token_ids) as OpenAI's usage does: one latency is recorded per sampled token."""
    return max(len(output.token_ids), len(output.metrics.token_latencies))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(response_id: str, created: int, model: str, choices: list[dict[str, Any]],
               usage_: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    return {"id": response_id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage_}  # fmt: skip


def completion_choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}


def chat_completion(response_id: str, created: int, model: str, choices: list[dict[str, Any]],
                    usage_: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    return {"id": response_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_}  # fmt: skip


def chat_choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text},
            "logprobs": None, "finish_reason": reason}  # fmt: skip


def chunk(kind: str, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
          usage_: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """A streaming chunk; kind is "completion" or "chat"."""
    body = {
        "id": response_id,
        "object": "text_completion" if kind == "completion" else "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def chunk_choice(kind: str, index: int, text: str | None, reason: str | None,
                 role: bool = False) -> dict[str, Any]:  # fmt: skip
    if kind == "completion":
        return completion_choice(index, text or "", reason)
    delta: dict[str, str] = {}
    if role:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ApiError(Exception):
    """An error answered with the OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = (
            status, message, param, kind, code)  # fmt: skip

    def response(self) -> JSONResponse:
        body = error_body(self.message, self.param, self.kind, self.code)
        return JSONResponse(body, status_code=self.status)


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: `data: ...` and a blank line."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")
