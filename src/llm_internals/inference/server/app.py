"""The OpenAI-compatible HTTP server: FastAPI routes over the engine loop.

    GET  /health                 200 {"status": "ok"} while the engine runs, 503 once it is dead
    GET  /v1/models              the one served model (/v1/models/NAME: its card)
    GET  /metrics                engine statistics, Prometheus text (?format=json for JSON)
    POST /v1/completions         continue a prompt (text or token ids; several prompts allowed)
    POST /v1/chat/completions    the assistant's reply to a conversation (via a chat template)
    GET  /openapi.json           the API schema, only with enable_docs (no /docs page: it would
                                 load scripts from a CDN)

Errors use the OpenAI shape {"error": {"message", "type", "param", "code"}}: 400 for an invalid
request (the message and `param` name the field), 401 without the API key (guards.py), 404 for
an unknown model or route, 408/413 for a body sent too slowly / too large (guards.py), 429 when
`max_concurrent_requests` prompts are already in flight (a request with several prompts counts
each), 503 when the engine failed (500 for a bug in a route). No error body carries the text of
an internal exception; that goes to the log.

A request is checked from the cheapest test to the dearest: fields (schema.py), model, n and
sampling parameters, the prompt count, each prompt's length in characters, and only then is
it tokenized, on a worker thread so the event loop keeps answering while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.server import metrics as metrics_format
from llm_internals.inference.server.chat_template import SimpleChatTemplate
from llm_internals.inference.server.engine_loop import (
    DEAD_MESSAGE,
    EngineDead,
    EngineLoop,
    EngineRequest,
)
from llm_internals.inference.server.error_handlers import install_error_handlers
from llm_internals.inference.server.guards import GuardSettings, RequestGuard
from llm_internals.inference.server.openai_format import ApiError
from llm_internals.inference.server.prompts import (
    FieldError,
    ServerLimits,
    check_prompt_chars,
    encode_text,
    plan_max_tokens,
    sampling_params,
)
from llm_internals.inference.server.respond import Cleanup, Generation, complete, stream_events
from llm_internals.inference.server.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    UnsupportedField,
)

T = TypeVar("T")


class ServerState:
    """What the routes share: the engine loop, the tokenizer, limits and counters."""

    def __init__(self, engine: Any, model_name: str, tokenizer: Any, chat_template: Any,
                 limits: ServerLimits,
                 engine_factory: Callable[[], Any] | None) -> None:  # fmt: skip
        self.loop = EngineLoop(engine, engine_factory)
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.context = int(engine.max_seq_len)
        self.vocab_size = int(engine.config.vocab_size)
        self.limits = limits.resolved(self.context, engine.scheduler.max_num_seqs, tokenizer)
        self.speculative = getattr(engine, "speculation", None) is not None
        multi_lora = getattr(getattr(engine, "model", None), "multi_lora", None)
        self.adapters = tuple(multi_lora.names) if multi_lora is not None else ()  # serve --lora
        self.created = int(time.time())
        self.in_flight = 0
        self.accepted = 0
        self.rejected = 0
        self.disconnects = 0
        self.tokenizing: ThreadPoolExecutor | None = None  # while the app runs

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """fn() on the tokenizing thread (rendering and tokenizing prompts)."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenizing, fn)


def create_app(
    engine: Any,
    *,
    model_name: str = "model",
    tokenizer: Any | None = None,
    chat_template: Any | None = None,
    limits: ServerLimits | None = None,
    engine_factory: Callable[[], Any] | None = None,
    guards: GuardSettings | None = None,
    enable_docs: bool = False,
) -> FastAPI:
    """The FastAPI app serving `engine` (an `LLM`). The engine thread starts and stops with the
    app (its lifespan), so run it under uvicorn or `serve_in_thread`. `engine_factory` builds a
    fresh engine if this one fails (engine_loop.py); without it a failed engine stays dead.
    `guards`: API key, allowed hosts, body size and time limits (guards.py)."""
    tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
    if tokenizer is None:
        raise LLMInternalsError("the server needs a tokenizer (the engine has none)",
                                hint="give LLM or create_app a tokenizer")  # fmt: skip
    state = ServerState(engine, model_name, tokenizer, chat_template or SimpleChatTemplate(),
                        limits or ServerLimits(), engine_factory)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # one tokenizing thread: tokenizers need not be thread-safe, and a long prompt then
        # delays other prompts' tokenizing but never the event loop
        state.tokenizing = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        state.loop.start()
        try:
            yield
        finally:
            state.loop.stop()
            state.tokenizing.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="llm-internals", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if enable_docs else None)  # fmt: skip
    app.state.server = state
    app.add_middleware(RequestGuard, settings=guards or GuardSettings())
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        if not state.loop.alive:
            return JSONResponse({"status": "error", "error": DEAD_MESSAGE}, 503)
        return JSONResponse({"status": "ok"})

    def model_card(model_id: str | None = None) -> dict[str, Any]:
        card = {"id": model_id or state.model_name, "object": "model", "created": state.created,
                "owned_by": "llm-internals", "max_model_len": state.context}  # fmt: skip
        return card | ({"parent": state.model_name} if model_id else {})  # a LoRA adapter

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(), *map(model_card, state.adapters)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id in state.adapters:
            return model_card(model_id)
        if model_id != state.model_name:
            raise ApiError(404, f"model {model_id!r} is not served here; this server serves "
                           f"{state.model_name!r}", "model", code="model_not_found")  # fmt: skip
        return model_card()

    @app.get("/metrics")
    async def metrics(format: str = "prometheus") -> Response:
        if format not in ("prometheus", "json"):
            raise ApiError(400, f"format must be 'prometheus' or 'json', got {format!r}", "format")
        loop = state.loop
        try:  # read together, between two steps: consistent with each other
            stats, aborted, failures = await loop.call(
                lambda engine: (engine.stats(), loop.aborted_requests, loop.epoch)
            )
        except EngineDead as err:
            raise ApiError(503, str(err), kind="server_error") from None
        values = metrics_format.engine_metrics(stats) + metrics_format.server_metrics(
            state.in_flight, state.accepted, state.rejected, state.disconnects, aborted, failures
        )
        if format == "json":
            return JSONResponse(metrics_format.as_json(values))
        return Response(metrics_format.prometheus_text(values),
                        media_type=metrics_format.PROMETHEUS_CONTENT_TYPE)  # fmt: skip

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check_common(state, body)
        texts = body.prompts()
        _check_prompt_count(state, len(texts))
        fields = ["prompt" if len(texts) == 1 else f"prompt[{i}]" for i in range(len(texts))]
        for field, prompt in zip(fields, texts, strict=True):
            if isinstance(prompt, str):
                check_prompt_chars(prompt, field, state.limits)

        def encode_all() -> list[tuple[str, list[int], str | None]]:
            pairs = zip(fields, texts, strict=True)
            return [(field, encode_text(state.tokenizer, p, field), p) if isinstance(p, str)
                    else (field, p, None) for field, p in pairs]  # fmt: skip

        prompts = await state.off_loop(encode_all)
        generation = _plan(state, body, "completion", prompts, body.max_tokens, stop=(),
                           echo=body.echo)  # fmt: skip
        return await _serve(state, generation, body.stream, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        _check_common(state, body)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        check_prompt_chars("".join(m["content"] for m in messages), "messages", state.limits)

        def render_and_encode() -> list[int]:
            try:
                text = state.chat_template.render(messages)
            except LLMInternalsError as err:  # e.g. the template's raise_exception()
                raise FieldError("messages", err.message) from None
            check_prompt_chars(text, "messages", state.limits)
            return encode_text(state.tokenizer, text, "messages")

        ids = await state.off_loop(render_and_encode)
        generation = _plan(state, body, "chat", [("messages", ids, None)],
                           body.requested_max_tokens, stop=state.chat_template.stop,
                           echo=False)  # fmt: skip
        return await _serve(state, generation, body.stream, request)

    return app


def _check_common(state: ServerState, body: SamplingFields) -> None:
    try:
        body.check_supported()
    except UnsupportedField as err:
        raise ApiError(400, err.message, err.field) from None
    if body.model != state.model_name and body.model not in state.adapters:
        served = ", ".join(repr(m) for m in (state.model_name, *state.adapters))
        raise ApiError(404, f"model {body.model!r} is not served here; this server serves "
                       f"{served}", "model", code="model_not_found")  # fmt: skip
    if body.n > state.limits.max_n:
        raise ApiError(400, f"n must be at most {state.limits.max_n} (the engine's max_num_seqs), "
                       f"got {body.n}", "n")  # fmt: skip
    if body.n > 1 and state.speculative:
        raise ApiError(400, f"n={body.n}: parallel sampling (n > 1) is not supported with "
                       "speculative decoding (this server runs with --speculative-model or "
                       "--speculative-ngram); send n=1", "n")  # fmt: skip
    outside = [t for t in body.stop_token_ids or () if t >= state.vocab_size]
    if outside:
        raise ApiError(400, f"stop_token_ids: token id {outside[0]} is outside the vocabulary "
                       f"(size {state.vocab_size})", "stop_token_ids")  # fmt: skip
    sampling_params(body, 1, ())  # the sampling fields' own checks, before any tokenizing


def _check_prompt_count(state: ServerState, count: int) -> None:
    limit = state.limits.max_concurrent_requests
    if count > limit:
        raise ApiError(400, f"prompt: {count} prompts in one request, more than this server's "
                       f"limit of {limit} at once", "prompt")  # fmt: skip


def _plan(state: ServerState, body: SamplingFields, kind: str,
          prompts: list[tuple[str, list[int], str | None]], requested_max_tokens: int | None,
          stop: tuple[str, ...], echo: bool) -> Generation:  # fmt: skip
    """Check the prompts and limits (lengths first: the cheapest); build the engine requests.
    Raises ApiError or FieldError (400)."""
    max_tokens = plan_max_tokens(
        kind,
        [(f, len(ids)) for f, ids, _ in prompts],
        requested_max_tokens,
        state.limits,
        state.context,
    )
    for field, ids, _ in prompts:
        bad = [t for t in ids if t >= state.vocab_size]
        if bad:
            raise ApiError(400, f"{field}: token id {bad[0]} is outside the vocabulary (size "
                           f"{state.vocab_size})", field)  # fmt: skip
    params = sampling_params(body, max_tokens, stop)
    if body.model in state.adapters:  # the `model` field names a LoRA adapter (serve --lora)
        params = dataclasses.replace(params, adapter=body.model)
    response_id = f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex}"
    requests = [EngineRequest(f"{response_id}-{i}", list(ids), params)
                for i, (_, ids, _) in enumerate(prompts)]  # fmt: skip
    texts = [text if text is not None else state.tokenizer.decode(ids) for _, ids, text in prompts]
    return Generation(kind, response_id, int(time.time()), requests, texts, body.n,
                      echo, body.include_usage)  # fmt: skip


async def _serve(state: ServerState, generation: Generation, stream: bool,
                 request: Request) -> Response:  # fmt: skip
    limit, size = state.limits.max_concurrent_requests, len(generation.requests)
    if state.in_flight + size > limit:
        state.rejected += 1
        raise ApiError(429, f"too many requests: {state.in_flight} prompts are being served and "
                       f"the limit is {limit}; retry later", kind="rate_limit_error",
                       code="too_many_requests")  # fmt: skip
    state.in_flight += size
    try:
        handle = await state.loop.submit(generation.requests)
    except LLMInternalsError as err:
        state.in_flight -= size
        raise ApiError(400, err.message, "prompt" if generation.kind == "completion"
                       else "messages") from None  # fmt: skip
    except EngineDead as err:
        state.in_flight -= size
        raise ApiError(503, str(err), kind="server_error") from None
    state.accepted += 1
    done = Cleanup(state, handle)
    if stream:
        events = stream_events(state, generation, handle, done)
        weakref.finalize(events, done)  # even if the response never starts iterating it
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"},
                                 background=BackgroundTask(done))  # fmt: skip
    try:
        return await complete(state, generation, handle, request, done)
    finally:
        done()
