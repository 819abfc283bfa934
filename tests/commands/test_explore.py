"""`llm-internals explore`: bad flags are one clear error; a real run prints its URL and serves
the lesson list there (the command in a subprocess, stopped with SIGINT like Ctrl-C)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from llm_internals.cli import main


def test_bad_flags_are_clear_errors(capsys, tmp_path):
    assert main(["explore", "--port", "0"]) == 2
    assert "--port must be in 1..65535, got 0" in capsys.readouterr().out
    assert main(["explore", "--model", str(tmp_path / "missing")]) == 2
    out = capsys.readouterr().out
    assert "missing is not a directory" in out and "hint:" in out


def test_explore_prints_its_url_and_serves_the_lessons():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "llm_internals.cli", "explore", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert f"explorer at http://127.0.0.1:{port}/" in line
        deadline = time.monotonic() + 60
        while True:  # the URL is printed just before uvicorn binds: poll the port
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/lessons", timeout=5) as r:
                    lessons = json.load(r)["lessons"]
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the explorer never answered"
                threading.Event().wait(0.05)
        assert lessons[0]["name"] == "bpe"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
