"""The Engine view's routes: a small paged engine on the explorer's model, stepped by hand.

    POST /api/engine/sessions                  {block_size, num_blocks, max_num_seqs,
                                               max_num_batched_tokens} -> {id, view}
    GET  /api/engine/sessions/{id}             the view (web/engine_session.py)
    POST /api/engine/sessions/{id}/requests    {prompt, max_tokens, n} -> the view
    POST /api/engine/sessions/{id}/step        one engine step -> the view
    POST /api/engine/sessions/{id}/reset       a fresh engine, same or new settings -> the view
    POST /api/engine/sessions/{id}/close       drop the session (the page sends it on leaving)

At most MAX_SESSIONS sessions live at once (each holds a KV pool); errors name the limit.
Steps take the model's lock (web/model_api.py): the Model view and the engines share one model.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from llm_internals.web.engine_session import EngineSession, EngineSettings
from llm_internals.web.errors import ApiError
from llm_internals.web.model_api import explorer_model

router = APIRouter(prefix="/api/engine")
MAX_SESSIONS = 8
_lock = threading.RLock()
_ids = itertools.count(1)


class SettingsQuery(BaseModel):
    block_size: int = EngineSettings.block_size
    num_blocks: int = EngineSettings.num_blocks
    max_num_seqs: int = EngineSettings.max_num_seqs
    max_num_batched_tokens: int = EngineSettings.max_num_batched_tokens


class RequestQuery(BaseModel):
    prompt: str = Field(max_length=100_000)
    max_tokens: int = 8
    n: int = 1


def _sessions(request: Request) -> OrderedDict[str, EngineSession]:
    state = request.app.state
    with _lock:
        if getattr(state, "engine_sessions", None) is None:
            state.engine_sessions = OrderedDict()
        return state.engine_sessions


def _session(request: Request, session_id: str) -> EngineSession:
    session = _sessions(request).get(session_id)
    if session is None:
        raise ApiError(
            404,
            f"no engine session {session_id!r} (it was closed or the explorer restarted)",
            hint="reload the Engine page to start a new session",
        )
    return session


def _new_session(request: Request, query: SettingsQuery) -> EngineSession:
    loaded = explorer_model(request)
    return EngineSession(loaded.model, loaded.tokenizer, EngineSettings(**query.model_dump()))


def _view(session_id: str, session: EngineSession) -> dict[str, Any]:
    return {"id": session_id, **session.view()}


@router.post("/sessions")
def create_session(request: Request, query: SettingsQuery | None = None) -> dict[str, Any]:
    session = _new_session(request, query or SettingsQuery())
    with _lock:
        sessions = _sessions(request)
        if len(sessions) >= MAX_SESSIONS:
            raise ApiError(429, f"{len(sessions)} engine sessions are open (the limit is "
                           f"{MAX_SESSIONS})", hint="close other Engine tabs, or restart "
                           "llm-internals explore")  # fmt: skip
        session_id = f"s{next(_ids)}"
        sessions[session_id] = session
    return _view(session_id, session)


@router.get("/sessions/{session_id}")
def show_session(session_id: str, request: Request) -> dict[str, Any]:
    return _view(session_id, _session(request, session_id))


@router.post("/sessions/{session_id}/requests")
def add_request(session_id: str, query: RequestQuery, request: Request) -> dict[str, Any]:
    session = _session(request, session_id)
    with explorer_model(request).lock:
        request_id = session.add_request(query.prompt, query.max_tokens, query.n)
    return {"request_id": request_id, **_view(session_id, session)}


@router.post("/sessions/{session_id}/step")
def step(session_id: str, request: Request) -> dict[str, Any]:
    session = _session(request, session_id)
    with explorer_model(request).lock:
        session.step()
    return _view(session_id, session)


@router.post("/sessions/{session_id}/reset")
def reset(session_id: str, request: Request, query: SettingsQuery | None = None) -> dict[str, Any]:
    sessions = _sessions(request)
    old = _session(request, session_id)
    session = _new_session(request, query or SettingsQuery(**vars(old.settings)))
    with _lock:
        sessions[session_id] = session
    return _view(session_id, session)


@router.post("/sessions/{session_id}/close")
def close(session_id: str, request: Request) -> dict[str, Any]:
    with _lock:
        closed = _sessions(request).pop(session_id, None) is not None
    return {"closed": closed}
