"""What a request must pass before any route sees it (one ASGI middleware, in this order):

    Host header    in `allowed_hosts` (when given: a server bound beyond loopback, or one that
                   wants DNS-rebinding protection)                               else 400
    API key        `Authorization: Bearer KEY` when `api_key` is set, on every route but
                   /health (as vLLM's --api-key)                                 else 401
    body size      at most `max_body_bytes`: a larger Content-Length is refused before reading,
                   and so is a body that grows beyond it while it arrives        else 413
    body time      the whole body within `body_timeout_s` of the headers, however slowly it
                   trickles in (a per-chunk timeout would let one byte a second through)
                                                                                 else 408
Refusals use the OpenAI error body and `Connection: close`. The body is read here, whole, and
handed to the app as one message; after it the app's receive() goes on to the real connection
(so a disconnect is still seen).

Header timeouts and the connection cap need the HTTP protocol itself: see launch.py.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.server import openai_format as fmt

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
DEFAULT_BODY_TIMEOUT_S = 30.0
OPEN_PATHS = ("/health",)  # answered without the API key (load balancers probe it)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class GuardSettings:
    """See the module docstring. allowed_hosts: host names without port ("*" allows any);
    None does no Host check."""

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise LLMInternalsError("the API key is empty", hint="give --api-key a value")
        if self.max_body_bytes < 1:
            raise LLMInternalsError(f"--max-body-bytes must be >= 1, got {self.max_body_bytes}")
        if not self.body_timeout_s > 0:
            raise LLMInternalsError(f"--body-timeout must be positive, got {self.body_timeout_s}")
        if self.allowed_hosts is not None:
            hosts = tuple(_bare_host(h) for h in self.allowed_hosts)
            object.__setattr__(self, "allowed_hosts", hosts)


class Refused(Exception):
    """A request the guard answers itself."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    async def send(self, send: Send) -> None:
        kind = "invalid_request_error" if self.status != 408 else "timeout_error"
        body = json.dumps(fmt.error_body(self.message, kind=kind, code=self.code)).encode()
        headers = {"content-type": "application/json", "content-length": str(len(body)),
                   "connection": "close"} | self.headers  # fmt: skip
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class ClientGone(Exception):
    """The client disconnected while sending the body: nothing to answer."""


class RequestGuard:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: Any, settings: GuardSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]}  # fmt: skip
        try:
            self.check_host(headers)
            self.check_key(scope["path"], headers)
            body = await self.read_body(headers, receive)
        except Refused as refusal:
            await refusal.send(send)
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    def check_host(self, headers: dict[str, str]) -> None:
        allowed = self.settings.allowed_hosts
        if allowed is None or "*" in allowed:
            return
        host = _bare_host(headers.get("host", ""))
        if host not in allowed:
            raise Refused(400, f"the Host header {host!r} is not one of this server's names "
                          f"(--allowed-hosts)", code="host_not_allowed")  # fmt: skip

    def check_key(self, path: str, headers: dict[str, str]) -> None:
        key = self.settings.api_key
        if key is None or path in OPEN_PATHS:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {key}".encode()):
            raise Refused(401, "missing or wrong API key: send the header 'Authorization: "
                          "Bearer KEY'", code="invalid_api_key",
                          headers={"www-authenticate": "Bearer"})  # fmt: skip

    async def read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise Refused(408, f"the request body did not arrive within "
                              f"{self.settings.body_timeout_s:g} s (--body-timeout)",
                              code="body_timeout") from None  # fmt: skip
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise _too_large(size, limit)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(size: int, limit: int) -> Refused:
    return Refused(413, f"the request body has {size} bytes or more, more than this server's "
                   f"limit of {limit} (--max-body-bytes)", code="body_too_large")  # fmt: skip


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the buffered body once, then the connection's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _bare_host(host: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host
