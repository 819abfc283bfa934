"""Every explorer error is JSON `{"error": message, "hint": hint-or-null}`, never a stack trace:
LLMInternalsError (unknown lesson, bad input, a sequence length over its limit) is a 4xx, an
unknown route a 404 naming the path, any other exception a 500 whose text stays in the log."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llm_internals.errors import LLMInternalsError

logger = logging.getLogger(__name__)
PAGES_HINT = "the explorer's pages: /, /lessons/NAME, /model, /engine; its API lives under /api/"


class ApiError(LLMInternalsError):
    """An LLMInternalsError with its HTTP status (404 for an unknown lesson, say)."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


def error_response(status: int, message: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LLMInternalsError, _user_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


async def _user_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, LLMInternalsError)
    return error_response(getattr(err, "status", 400), err.message, err.hint)


async def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    problems = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
        problems.append(f"{where or 'request'}: {e.get('msg')}")
    return error_response(400, "invalid request: " + "; ".join(problems))


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    if err.status_code == 404:
        return error_response(404, f"no such page or API route: {request.url.path}", PAGES_HINT)
    if err.status_code == 405:
        return error_response(405, f"method {request.method} is not allowed on {request.url.path}")
    return error_response(err.status_code, str(err.detail))


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    logger.exception("explorer: %s %s failed", request.method, request.url.path, exc_info=err)
    return error_response(500, f"internal error while serving {request.url.path} (see the log)")
