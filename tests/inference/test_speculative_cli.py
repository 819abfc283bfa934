"""`llm-internals generate --draft-model PATH | --ngram`: the same greedy text as the target
alone, the acceptance figures printed, and one-line errors for bad combinations."""

from __future__ import annotations

import pytest

from llm_internals.cli import main

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog. " * 8


@pytest.fixture(scope="module")
def folders(write_tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("speculative_cli")
    target = write_tiny_checkpoint(root / "target", TEXT, seed=3, max_seq_len=64)
    draft = write_tiny_checkpoint(root / "draft", TEXT, seed=4, max_seq_len=64)
    other = write_tiny_checkpoint(root / "other", TEXT.upper() + " 0123456789!?", seed=4,
                                  max_seq_len=64)  # fmt: skip
    return target, draft, other


def output(capsys) -> tuple[str, str]:
    """(the generated line, everything printed after it, whitespace-normalised)."""
    lines = capsys.readouterr().out.splitlines()
    return lines[0], " ".join(" ".join(lines[1:]).split())


def test_greedy_text_matches_the_target_alone_and_stats_are_printed(folders, capsys):
    target, draft, _ = folders
    base = ["generate", "--model", str(target), "--prompt", "the cat", "--temperature", "0",
            "--max-new-tokens", "12"]  # fmt: skip
    assert main(base) == 0
    plain, _ = output(capsys)
    for extra in (["--draft-model", str(draft)], ["--ngram", "--ngram-max", "2"],
                  ["--draft-model", str(target), "--adaptive-gamma"]):  # fmt: skip
        assert main([*base, *extra, "--num-speculative-tokens", "3"]) == 0, extra
        text, tail = output(capsys)
        assert text == plain, extra
        assert "acceptance rate" in tail and "tokens per target forward" in tail, tail
        assert "target forwards/s" in tail  # a decode step is a round, not a token


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--draft-model", "OTHER"], "tokenizer differs"),
        (["--ngram", "--no-cache"], "--no-cache"),
        (["--ngram", "--num-speculative-tokens", "0"], "--num-speculative-tokens"),
        (["--ngram", "--ngram-min", "3", "--ngram-max", "2"], "--ngram-min"),
        (["--ngram", "--sliding-window"], "--sliding-window"),
    ],
)
def test_bad_combinations_fail_in_one_message(folders, capsys, extra, message):
    target, _, other = folders
    extra = [str(other) if e == "OTHER" else e for e in extra]
    args = ["generate", "--model", str(target), "--prompt", "the cat", "--max-new-tokens", "3"]
    assert main([*args, *extra]) == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_draft_model_and_ngram_are_mutually_exclusive(folders, capsys):
    target, draft, _ = folders
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(target), "--prompt", "a", "--ngram",
              "--draft-model", str(draft)])  # fmt: skip
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
