"""Running the app under uvicorn: blocking (the `serve` command) or in a background thread
(tests, notebooks, benchmarks), always on a loopback address unless told otherwise."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from llm_internals.errors import LLMInternalsError

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0


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


def serve(app: Any, host: str = DEFAULT_HOST, port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C stops uvicorn, which stops the engine thread)."""
    sock = bind_socket(host, port)
    config = uvicorn.Config(app, log_level=log_level, timeout_keep_alive=30)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for: a normal stop
        pass
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = DEFAULT_HOST, port: int = 0,
                    log_level: str = "warning") -> Iterator[str]:  # fmt: skip
    """Serve `app` from a background thread; yields the base URL ("http://127.0.0.1:PORT").
    On exit the server shuts down (open connections get a few seconds) and the thread ends."""
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
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
