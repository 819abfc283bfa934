"""Every error in the OpenAI shape {"error": {"message", "type", "param", "code"}}: FastAPI's
validation errors (422 there, 400 here, naming the field), Starlette's own (unknown route 404,
wrong method 405), the server's ApiError and FieldError, and any other exception (500, its
text only in the log: clients never see internal exception text)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llm_internals.inference.server import openai_format as fmt
from llm_internals.inference.server.openai_format import ApiError
from llm_internals.inference.server.prompts import FieldError

logger = logging.getLogger(__name__)
INTERNAL_ERROR = "internal server error (see the server log)"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, lambda _request, err: err.response())
    app.add_exception_handler(
        FieldError, lambda _request, err: ApiError(400, err.message, err.field).response()
    )
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


async def _validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 becomes OpenAI's 400, naming the offending field(s)."""
    problems, param = [], None
    for e in err.errors()[:3]:
        loc = [str(part) for part in e.get("loc", ()) if part != "body"]
        if e.get("type") == "json_invalid":
            problems.append(f"the request body is not valid JSON ({e.get('msg')})")
            continue
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        got = ""
        if "input" in e and not isinstance(e["input"], dict):
            shown = repr(e["input"])
            got = f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        problems.append(f"{where}: {e.get('msg')}{got}")
    message = "invalid request: " + "; ".join(problems)
    return JSONResponse(fmt.error_body(message, param), status_code=400)


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the OpenAI shape."""
    if err.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif err.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(err.detail)
    return JSONResponse(fmt.error_body(message, code=None), status_code=err.status_code,
                        headers=err.headers)  # fmt: skip


async def _internal_error(_request: Request, err: Exception) -> JSONResponse:
    """A bug in a route: 500 in the OpenAI shape, the details only in the log."""
    logger.error("error while serving a request", exc_info=err)
    return JSONResponse(fmt.error_body(INTERNAL_ERROR, kind="server_error"), status_code=500)
