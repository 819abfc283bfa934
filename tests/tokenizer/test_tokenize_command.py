"""`llm-internals tokenize` output: piece boundaries without colour when piped, no Python
reprs, hints that name CLI flags."""

import pytest

from llm_internals.cli import main
from llm_internals.commands.tokenize import piece_text
from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import Tokenizer

from .conftest import EOT


@pytest.fixture
def tok_file(tok_small, tmp_path):
    path = tmp_path / "tok.json"
    tok_small.save(path)
    return path


def test_piped_output_separates_pieces_without_colour(tok_small, tok_file, capsys):
    text = "To be, or not\tto be |中"
    assert main(["tokenize", "--tokenizer", str(tok_file), text]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # capsys is not a terminal: no escape codes
    pieces_line, ids_line, summary = out.splitlines()
    ids = tok_small.encode(text)
    assert ids_line == "ids: " + " ".join(map(str, ids))
    assert pieces_line == "|".join(piece_text(tok_small.token_bytes(i)) for i in ids)
    assert len(pieces_line.split("|")) == len(ids)  # a literal | shows as ¦
    assert "␣be" in pieces_line and "⇥" in pieces_line and "¦" in pieces_line
    assert summary.startswith(f"{len(ids)} tokens, {len(text.encode())} bytes")
    assert "Tokenizer(" not in out and "merge_ranks=" not in out  # no repr


def test_partial_utf8_pieces_are_shown_as_hex_bytes():
    assert piece_text("中".encode()[:2]) == "<0xE4><0xB8>"
    assert piece_text(b"a b\n\r|") == "a␣b↵␍¦"
    base = {i: bytes([i]) for i in range(256)}
    assert [piece_text(Tokenizer(base).token_bytes(i)) for i in Tokenizer(base).encode("é")] == [
        "<0xC3>",
        "<0xA9>",
    ]


def test_special_token_hint_names_the_cli_flags(tok_small, tok_file, capsys):
    text = f"a{EOT}b"
    assert main(["tokenize", "--tokenizer", str(tok_file), text]) == 2
    out = capsys.readouterr().out
    assert "--allow-special" in out and "--special-as-text" in out
    assert "allowed_special" not in out and "disallowed_special" not in out
    assert main(["tokenize", "--tokenizer", str(tok_file), "--allow-special", text]) == 0
    assert f"ids: {' '.join(map(str, tok_small.encode(text, allowed_special='all')))}" in (
        capsys.readouterr().out
    )
    assert main(["tokenize", "--tokenizer", str(tok_file), "--special-as-text", text]) == 0
    ordinary = tok_small.encode(text, disallowed_special=())
    assert f"ids: {' '.join(map(str, ordinary))}" in capsys.readouterr().out
    with pytest.raises(LLMInternalsError) as info:
        tok_small.encode(text)
    assert "--allow-special" in info.value.hint


def test_no_hint_under_the_tokenizer_names_a_python_argument():
    import pathlib
    import re

    import llm_internals.commands.tokenize as command
    import llm_internals.tokenizer as package

    sources = [*pathlib.Path(package.__file__).parent.glob("*.py"), pathlib.Path(command.__file__)]
    for source in sources:
        for hint in re.findall(r"hint=(f?\"[^\n]*\"(?:\n\s*f?\"[^\n]*\")*)", source.read_text()):
            assert not re.search(r"\b[a-z]+_[a-z_]+=", hint), (source.name, hint)
