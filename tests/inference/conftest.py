"""Fixtures shared by the server and engine tests: a tiny random decoder saved as a checkpoint
folder with its tokenizer, and that folder loaded in float64 (so greedy argmax ties cannot
flip between the paths a test compares)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from llm_internals.models import DecoderLM, ModelConfig, load_pretrained
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.loading import load_tokenizer
from llm_internals.tokenizer import train_bpe


def _write_tiny_checkpoint(
    directory: Path, text: str, *, seed: int, max_seq_len: int, vocab_size: int = 300
) -> Path:
    """A BPE tokenizer trained on `text` and a 2-layer GQA decoder seeded with `seed`."""
    tokenizer = train_bpe(text, vocab_size)
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=max_seq_len)  # fmt: skip
    save_checkpoint(DecoderLM(config), directory)
    tokenizer.save(directory / "tokenizer.json")
    return directory


def _load_float64(directory: Path) -> tuple[torch.nn.Module, Any]:
    model = load_pretrained(directory, dtype=torch.float64, attn_impl="sdpa", fused_ops=True)
    return model, load_tokenizer(directory / "tokenizer.json")


@pytest.fixture(scope="session")
def write_tiny_checkpoint() -> Callable[..., Path]:
    return _write_tiny_checkpoint


@pytest.fixture(scope="session")
def load_float64() -> Callable[[Path], tuple[torch.nn.Module, Any]]:
    return _load_float64
