"""Answering an accepted generation request: one JSON body when every sample is done, or a
stream of server-sent events as tokens arrive. Either way a client that goes away is noticed
and its unfinished samples are aborted (which frees their KV blocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from llm_internals.inference.server import openai_format as fmt
from llm_internals.inference.server.engine_loop import EngineDead, EngineRequest, RequestHandle
from llm_internals.inference.server.openai_format import ApiError


@dataclass
class Generation:
    """One accepted generation request, ready for the engine."""

    kind: str  # "completion" or "chat"
    response_id: str
    created: int
    requests: list[EngineRequest]
    prompt_texts: list[str]
    n: int
    echo: bool
    include_usage: bool

    def choice_index(self, output: Any) -> int:
        prompt_index = int(output.request_id.rsplit("-", 1)[1])
        return prompt_index * self.n + output.index

    @property
    def prompt_tokens(self) -> int:
        return sum(len(r.prompt_token_ids) for r in self.requests)


class Cleanup:
    """Runs once per accepted request, however it ends: closes the handle (aborting unfinished
    samples, which frees their blocks) and releases the concurrency slot. A response that did
    not run to its end (`completed` unset: the client went away, or the server is stopping)
    counts as a disconnect, whether or not its samples had finished."""

    def __init__(self, state: Any, handle: RequestHandle) -> None:
        self.state, self.handle, self.ran, self.completed = state, handle, False, False

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        if not self.completed:
            self.state.disconnects += 1
        self.handle.close()
        self.state.in_flight -= len(self.handle.requests)


async def complete(state: Any, generation: Generation, handle: RequestHandle, request: Request,
                   done: Cleanup) -> Response:  # fmt: skip
    """Non-streaming: wait for every sample, unless the client goes away first."""

    async def collect() -> dict[int, Any]:
        final = {}
        async for output in handle:
            if output.finished:
                final[generation.choice_index(output)] = output
        return final

    collecting = asyncio.ensure_future(collect())
    watching = asyncio.ensure_future(_client_gone(request))
    await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    if not collecting.done():  # the client disconnected: the caller's cleanup aborts the rest
        collecting.cancel()
        return Response(status_code=499)
    done.completed = True
    try:
        final = collecting.result()
    except EngineDead as err:
        raise ApiError(503, str(err), kind="server_error") from None
    choices, completion_tokens = [], 0
    for index in sorted(final):
        output = final[index]
        completion_tokens += fmt.generated_tokens(output)
        text = output.text
        if generation.echo:
            text = generation.prompt_texts[index // generation.n] + text
        make = fmt.completion_choice if generation.kind == "completion" else fmt.chat_choice
        choices.append(make(index, text, fmt.finish_reason(output)))
    usage = fmt.usage(generation.prompt_tokens, completion_tokens)
    make_body = fmt.completion if generation.kind == "completion" else fmt.chat_completion
    body = make_body(generation.response_id, generation.created, state.model_name, choices, usage)
    return JSONResponse(body)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so the next ASGI message
    is http.disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def stream_events(state: Any, generation: Generation, handle: RequestHandle,
                        done: Cleanup) -> AsyncIterator[str]:  # fmt: skip
    """The SSE events of a streaming request, ending with [DONE] (after an error event if the
    engine failed). If the client disconnects, Starlette cancels this generator (or stops
    iterating it) and `done` aborts the unfinished samples."""
    try:
        async for text in _events(state, generation, handle):
            yield text
        yield fmt.SSE_DONE
        done.completed = True  # resumed after the last event was handed to the server
    finally:
        done()


async def _events(state: Any, generation: Generation, handle: RequestHandle) -> AsyncIterator[str]:
    kind, n = generation.kind, generation.n

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        return fmt.sse(fmt.chunk(kind, generation.response_id, generation.created,
                                 state.model_name, choices, usage))  # fmt: skip

    for index in range(len(generation.requests) * n):
        if kind == "chat":
            yield event([fmt.chunk_choice(kind, index, "", None, role=True)])
        elif generation.echo:
            yield event([fmt.chunk_choice(kind, index, generation.prompt_texts[index // n],
                                          None)])  # fmt: skip
    completion_tokens = 0
    try:
        async for outputs in handle.batches():
            events = []
            for output in outputs:
                reason = fmt.finish_reason(output)
                if reason is not None:
                    completion_tokens += fmt.generated_tokens(output)
                if output.new_text or reason is not None:
                    text = output.new_text if output.new_text or kind == "completion" else None
                    choice = fmt.chunk_choice(kind, generation.choice_index(output), text, reason)
                    events.append(event([choice]))
            if events:
                yield "".join(events)  # several events in one write when the client lags
    except EngineDead as err:  # the engine failed: an error event instead of the rest
        yield fmt.sse(fmt.error_body(str(err), kind="server_error"))
        return
    if generation.include_usage:
        yield event([], fmt.usage(generation.prompt_tokens, completion_tokens))
