"""Running the app under uvicorn: blocking (the `serve` command) or in a background thread
(tests, notebooks, benchmarks), always on a loopback address unless told otherwise.

Slow clients: uvicorn closes an idle keep-alive connection after `timeout_keep_alive` seconds,
but a connection that sends its request headers slowly (a byte every few seconds, never the
end) is kept forever, and so is any number of them. The HTTP protocol here adds, per
connection (ConnectionLimits):
    header_timeout_s   the request line and headers must arrive within this many seconds of
                       the connection (or of the previous response): else the connection closes
    max_connections    connections open at once; one more is closed as soon as it is accepted
The body's own deadline is the ASGI middleware's (guards.py: --body-timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from llm_internals.errors import LLMInternalsError

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ConnectionLimits:
    """See the module docstring (`llm-internals serve` flags of the same names)."""

    timeout_keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("timeout_keep_alive_s", "header_timeout_s", "max_connections"):
            if not getattr(self, name) > 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise LLMInternalsError(f"{flag} must be positive, got {getattr(self, name)}")


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a header deadline and a cap on open connections."""

    class GuardedH11Protocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self.transport.close()
                return
            self.arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.waiting_for_headers():
                if self.header_timer is None:  # the first bytes of the next request
                    self.arm_header_timer()
            else:
                self.disarm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_header_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms the keep-alive timer for an idle connection
            self.disarm_header_timer()

        def waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def arm_header_timer(self) -> None:
            self.disarm_header_timer()
            self.header_timer = self.loop.call_later(limits.header_timeout_s, self.headers_late)

        def disarm_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free port the OS picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise LLMInternalsError(
            f"cannot listen on {host}:{port}: {err.strerror}",
            hint="pick another --port (or stop what uses it)",
        ) from None
    sock.listen(2048)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, also stopping when `stop_when()` becomes true (checked every 0.1 s)."""

    def __init__(self, config: uvicorn.Config, stop_when: Callable[[], bool] | None) -> None:
        super().__init__(config)
        self.stop_when = stop_when

    async def on_tick(self, counter: int) -> bool:
        if self.stop_when is not None and self.stop_when():
            self.should_exit = True
        return await super().on_tick(counter)


def _config(app: Any, log_level: str, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=log_level, http=guarded_protocol(limits),
                          timeout_keep_alive=limits.timeout_keep_alive_s, **kwargs)  # fmt: skip


def serve(app: Any, host: str = DEFAULT_HOST, port: int = 8000, log_level: str = "info",
          limits: ConnectionLimits | None = None,
          stop_when: Callable[[], bool] | None = None) -> None:  # fmt: skip
    """Serve until interrupted (Ctrl-C stops uvicorn, which stops the engine thread) or until
    stop_when() is true."""
    sock = bind_socket(host, port)
    config = _config(app, log_level, limits or ConnectionLimits())
    try:
        _Server(config, stop_when).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for: a normal stop
        pass
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = DEFAULT_HOST, port: int = 0, log_level: str = "warning",
                    limits: ConnectionLimits | None = None) -> Iterator[str]:  # fmt: skip
    """Serve `app` from a background thread; yields the base URL ("http://127.0.0.1:PORT").
    On exit the server shuts down (open connections get a few seconds) and the thread ends."""
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    config = _config(app, log_level, limits or ConnectionLimits(), timeout_graceful_shutdown=5)
    server = _Server(config, None)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="uvicorn")  # fmt: skip
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        sock.close()
