"""The train-tokenizer and tokenize commands, run through the real CLI entry point."""

import json

import pytest

from llm_internals.cli import main
from llm_internals.tokenizer import Tokenizer


def test_train_then_tokenize(tmp_path, shakespeare_slice, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_slice[:100_000])
    out = tmp_path / "tok.json"
    rc = main(
        ["train-tokenizer", "--corpus", str(corpus), "--vocab-size", "600", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "bytes per token" in printed and "longest tokens" in printed
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 600 and "<|endoftext|>" in tok.special_tokens
    rc = main(["tokenize", "--tokenizer", str(out), "To be, or not to be"])
    printed = capsys.readouterr().out
    assert rc == 0
    ids = tok.encode("To be, or not to be")
    assert "ids: " + " ".join(map(str, ids)) in printed
    assert f"{len(ids)} tokens" in printed


def test_hf_and_tiktoken_outputs_and_errors(tmp_path, shakespeare_slice, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_slice[:50_000])
    hf_out = tmp_path / "tokenizer.json"
    common = ["train-tokenizer", "--corpus", str(corpus), "--vocab-size", "400"]
    assert main([*common, "--out", str(hf_out), "--format", "hf"]) == 0
    assert json.loads(hf_out.read_text())["model"]["type"] == "BPE"
    tt_out = tmp_path / "tok.tiktoken"
    assert main([*common, "--out", str(tt_out), "--format", "tiktoken", "--special", "<|x|>"]) == 0
    capsys.readouterr()
    assert main(["tokenize", "--tokenizer", str(tt_out), "--pattern", "gpt2", "hello"]) == 0
    assert main(["train-tokenizer", "--corpus", str(corpus), "--vocab-size", "100"]) == 2
    assert "vocab size 100 is too small" in capsys.readouterr().out
    assert main(["tokenize", "--tokenizer", str(hf_out), "a<|endoftext|>"]) == 2
    assert "not allowed" in capsys.readouterr().out
    assert main(["tokenize", "--tokenizer", str(hf_out), "--allow-special", "a<|endoftext|>"]) == 0


def test_empty_corpus_file_is_named_in_the_error(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train-tokenizer", "--corpus", str(empty), "--out", str(tmp_path / "t.json")]) == 2
    printed = capsys.readouterr().out
    assert "empty" in printed and "empty.txt" in printed
    assert not (tmp_path / "t.json").exists()


def test_tie_break_option_reaches_the_trainer(tmp_path, capsys):
    # "zz é": three pairs seen once each; lexicographic merges the greatest bytes (c3, a9)
    # first, hf merges (z, z) first (see test_trainer for the derivation).
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("zz é")
    for rule, first in (("lexicographic", (0xC3, 0xA9)), ("hf", (ord("z"), ord("z")))):
        out = tmp_path / f"{rule}.json"
        args = ["train-tokenizer", "--corpus", str(corpus), "--vocab-size", "258"]
        assert main([*args, "--special", "<s>", "--tie-break", rule, "--out", str(out)]) == 0
        assert Tokenizer.load(out).merges == [first]
    with pytest.raises(SystemExit) as e:
        main(["train-tokenizer", "--tie-break", "bytes"])
    assert e.value.code == 2 and "lexicographic" in capsys.readouterr().err


def test_a_pattern_that_drops_characters_is_refused_before_training(tmp_path, capsys):
    corpus = tmp_path / "not-read-yet.txt"  # the pattern is refused before the corpus is read
    out = tmp_path / "tok.json"
    code = main(["train-tokenizer", "--corpus", str(corpus), "--vocab-size", "300",
                 "--pattern", r"\S+", "--out", str(out)])  # fmt: skip
    assert code == 2
    assert "it would be dropped from the tokens" in capsys.readouterr().out
    assert not out.exists()
