"""Slow clients cannot hold the server: raw sockets to a real uvicorn on 127.0.0.1 that send
their headers or body too slowly are closed after the timeout (the body one with a 408), a
connection beyond the cap is closed at once, and a normal request succeeds meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
import torch

from llm_internals.inference.paged import LLM
from llm_internals.inference.server import create_app, serve_in_thread
from llm_internals.inference.server.guards import GuardSettings
from llm_internals.inference.server.launch import ConnectionLimits
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

MODEL = "tiny-slow"
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
SLOW_CLIENTS = 50
TEXT = "Is this a dagger which I see before me, the handle toward my hand? " * 10


@pytest.fixture(scope="module")
def server():
    tokenizer = train_bpe(TEXT, 280)
    torch.manual_seed(5)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, max_seq_len=64)  # fmt: skip
    engine = LLM(DecoderLM(config), tokenizer, block_size=8, num_blocks=32, max_num_seqs=4,
                 max_num_batched_tokens=64)  # fmt: skip
    app = create_app(engine, model_name=MODEL,
                     guards=GuardSettings(body_timeout_s=BODY_TIMEOUT_S))  # fmt: skip
    limits = ConnectionLimits(header_timeout_s=HEADER_TIMEOUT_S, timeout_keep_alive_s=1.0,
                              max_connections=SLOW_CLIENTS + 20)  # fmt: skip
    with serve_in_thread(app, limits=limits) as url:
        yield url, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it
    (seconds from now). Fails if it is still open after within_s."""
    started, data = time.monotonic(), b""
    sock.settimeout(within_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {within_s} s")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def normal_request_succeeds(url: str) -> None:
    response = httpx.post(url + "/v1/completions", timeout=10,
                          json={"model": MODEL, "prompt": "Is this", "max_tokens": 2})  # fmt: skip
    assert response.status_code == 200, response.text


def test_slow_headers_are_closed_after_the_header_timeout(server):
    url, port = server
    slow = [connect(port) for _ in range(SLOW_CLIENTS)]
    silent = [connect(port) for _ in range(10)]  # these never send a byte
    for sock in slow:  # a request line and half a header, never the blank line that ends them
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    normal_request_succeeds(url)  # while they hang
    time.sleep(HEADER_TIMEOUT_S / 2)
    for sock in slow:  # still trickling: trickling does not extend the deadline
        sock.sendall(b"T")
    for sock in slow + silent:
        data, _ = read_until_closed(sock, within_s=HEADER_TIMEOUT_S + 10)
        assert data == b"", "closed without an answer: there was no request to answer"
        sock.close()
    normal_request_succeeds(url)


def test_a_slow_second_request_on_a_kept_alive_connection_is_closed_too(server):
    url, port = server
    sock = connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):  # the whole first response
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # then nothing more
    data, _ = read_until_closed(sock, within_s=HEADER_TIMEOUT_S + 10)
    assert data == b""
    sock.close()


def test_slow_body_gets_408_after_the_body_timeout(server):
    """The deadline is for the whole body: a byte every 0.1 s (which a per-read timeout would
    let through forever) is cut after the timeout, while it is still trickling."""
    url, port = server
    slow = [connect(port) for _ in range(10)]
    for sock in slow:  # headers promise 100 bytes; 10 arrive, then a byte now and then
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")  # fmt: skip
    stop = threading.Event()

    def trickle():
        for _ in range(80):  # 8 s, never the whole body
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
            if stop.wait(0.1):
                return

    trickling = threading.Thread(target=trickle, daemon=True)
    trickling.start()
    try:
        normal_request_succeeds(url)
        for sock in slow:
            data, _ = read_until_closed(sock, within_s=BODY_TIMEOUT_S + 2)
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
            assert b'"type": "timeout_error"' in data and b"--body-timeout" in data
            assert trickling.is_alive(), "cut while the body was still trickling in"
    finally:
        stop.set()
        trickling.join()
        for sock in slow:
            sock.close()
    normal_request_succeeds(url)


def test_connections_beyond_the_cap_are_closed_at_once(server):
    url, port = server
    held = [connect(port) for _ in range(SLOW_CLIENTS + 20)]
    time.sleep(0.2)  # the server has accepted them all
    extra = connect(port)
    data, after = read_until_closed(extra, within_s=5)
    assert data == b"" and after < HEADER_TIMEOUT_S, "closed at once, not by the header timeout"
    extra.close()
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed connections and accepts requests again
        try:
            normal_request_succeeds(url)
            break
        except (AssertionError, httpx.TransportError):
            assert time.monotonic() < deadline
            time.sleep(0.1)
