"""`llm-internals serve`: a real process on 127.0.0.1 answering the openai client; bad options
are one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from llm_internals.cli import main
from llm_internals.inference.generate import generate
from llm_internals.models.loading import load_model_and_tokenizer

TEXT = (
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. " * 8
)
STARTUP_S = 90


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, write_tiny_checkpoint):
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny-serve"), TEXT, seed=2, max_seq_len=128
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_process_answers_the_openai_client(checkpoint):
    port = free_port()
    command = [sys.executable, "-m", "llm_internals", "serve", "--model", str(checkpoint),
               "--port", str(port), "--served-model-name", "tiny", "--num-blocks", "64",
               "--block-size", "8", "--threads", "1", "--log-level", "warning",
               "--api-key", "sk-serve-test"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=os.environ | {"COLUMNS": "200"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        assert httpx.get(url + "/v1/models").status_code == 401  # /health answered without it
        with openai.OpenAI(base_url=url + "/v1", api_key="sk-serve-test", max_retries=0,
                           timeout=30) as client:  # fmt: skip
            assert [m.id for m in client.models.list().data] == ["tiny"]
            result = client.completions.create(model="tiny", prompt="Friends, Romans",
                                               max_tokens=8, temperature=0)  # fmt: skip
            chat = client.chat.completions.create(
                model="tiny", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
            )
        model, tokenizer, _ = load_model_and_tokenizer(checkpoint, None)
        expected = generate(model, tokenizer, "Friends, Romans", max_new_tokens=8)
        assert result.choices[0].text == expected.text
        assert chat.choices[0].message.role == "assistant"
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down, the process ends
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert f"127.0.0.1:{port}/v1" in output and "tiny" in output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "0"], "--port"),
        (["--max-concurrent", "0"], "--max-concurrent"),
        (["--kv-cache-gb", "-1"], "--kv-cache-gb"),
        (["--chat-template", "/nonexistent/template.jinja"], "template.jinja"),
        (["--host", "0.0.0.0"], "--allowed-hosts"),
        (["--allowed-hosts", " , "], "--allowed-hosts"),
        (["--max-body-bytes", "0"], "--max-body-bytes"),
        (["--body-timeout", "0"], "--body-timeout"),
        (["--header-timeout", "-1"], "--header-timeout"),
        (["--timeout-keep-alive", "0"], "--timeout-keep-alive"),
        (["--max-connections", "0"], "--max-connections"),
        (["--api-key", " "], "--api-key"),
    ],
)
def test_bad_options_are_one_line_errors(checkpoint, capsys, options, message):
    assert main(["serve", "--model", str(checkpoint), *options]) == 2
    out = capsys.readouterr().out
    assert "error:" in out and message in out and "Traceback" not in out


def test_missing_model_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_port_in_use_is_a_one_line_error(checkpoint, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        code = main(["serve", "--model", str(checkpoint), "--port", str(port), "--num-blocks",
                     "16", "--log-level", "warning"])  # fmt: skip
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().out


def test_http_flag_defaults_are_the_library_defaults():
    """serve.py repeats them so that --help need not import the server; they must agree."""
    from llm_internals.commands import serve
    from llm_internals.inference.server.guards import GuardSettings
    from llm_internals.inference.server.launch import ConnectionLimits

    guards, limits = GuardSettings(), ConnectionLimits()
    assert guards.max_body_bytes == serve.MAX_BODY_BYTES
    assert guards.body_timeout_s == serve.BODY_TIMEOUT_S
    assert limits.header_timeout_s == serve.HEADER_TIMEOUT_S
    assert limits.timeout_keep_alive_s == serve.TIMEOUT_KEEP_ALIVE_S
    assert limits.max_connections == serve.MAX_CONNECTIONS
