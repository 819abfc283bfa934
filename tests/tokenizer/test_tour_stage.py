"""The tour stage "tokenizer": trains, prints merges and compression, saves, hands over."""

from pathlib import Path

from rich.console import Console

from llm_internals.tokenizer import Tokenizer
from llm_internals.tour import STAGES, TourContext
from llm_internals.tour import tokenizer as stage


def test_stage_trains_saves_and_hands_over(tmp_path: Path, shakespeare_slice):
    console = Console(record=True, width=120)
    ctx = TourContext(console=console, workdir=tmp_path, corpus_source="shakespeare")
    ctx.train_text, ctx.val_text = shakespeare_slice[:200_000], shakespeare_slice[200_000:]
    stage.run(ctx)
    out = console.export_text()
    tok = ctx.artifacts["tokenizer"]
    assert isinstance(tok, Tokenizer) and tok.vocab_size == stage.VOCAB_SIZE
    saved = Tokenizer.load(tmp_path / "tokenizer.json")
    assert saved.merges == tok.merges
    assert "first merges" in out and "character level" in out
    n_bytes = len(ctx.val_text.encode())
    ratio = n_bytes / len(tok.encode_ordinary(ctx.val_text))
    assert f"{ratio:.3f}" in out
    assert ("tokenizer", "tokenizer") in STAGES
