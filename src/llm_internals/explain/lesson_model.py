"""The small trained model that ships with the package, for lessons that need learned weights.

Attention patterns, FFN activations and next-token distributions of random weights are noise
(every attention row nearly uniform); these lessons load this model instead: a 4-layer
Llama-style DecoderLM (d_model 128, 4 heads, RoPE, RMSNorm, SwiGLU) and its 1,024-id byte-level
BPE tokenizer, trained on the Shakespeare corpus by scripts/train_lesson_model.py with a fixed
seed. Its folder, LESSON_MODEL_DIR, holds config.json + model.safetensors (models/checkpoint.py),
tokenizer.json and training.json (the command, seed, steps, losses and the loss curve).

The model is loaded once per process, in eval mode, on the CPU, with attention computed step by
step ("scratch": the path that records scores and weights for lessons).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json
from llm_internals.trace import recording

LESSON_MODEL_DIR = Path(__file__).parent / "assets" / "lesson_model"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "training.json")
REBUILD_HINT = (
    "reinstall llm-internals, or rebuild the files with "
    "`python scripts/train_lesson_model.py` from a source checkout"
)


def _check_files(directory: Path) -> None:
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise LLMInternalsError(
            f"the lessons' trained model is incomplete: {directory} lacks {', '.join(missing)}",
            hint=REBUILD_HINT,
        )


@functools.lru_cache(maxsize=1)
def load_lesson_model() -> tuple[Any, Any]:
    """(DecoderLM in eval mode, its BPE Tokenizer), loaded once per process."""
    from llm_internals.models.checkpoint import load_checkpoint
    from llm_internals.models.loading import load_tokenizer

    _check_files(LESSON_MODEL_DIR)
    model = load_checkpoint(LESSON_MODEL_DIR).eval()
    model.set_attn_impl("scratch")
    model.set_fused_ops(False)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, load_tokenizer(LESSON_MODEL_DIR / "tokenizer.json")


@functools.lru_cache(maxsize=1)
def lesson_model_training() -> dict[str, Any]:
    """training.json: command, seed, steps, losses and the logged curve of the shipped model."""
    _check_files(LESSON_MODEL_DIR)
    return read_json(LESSON_MODEL_DIR / "training.json", "lesson model training record")


def token_labels(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each id as its text, quoted so that leading spaces show ('␣' would hide what BPE does)."""
    return [repr(tokenizer.decode([i])) for i in ids]


def trained_attention(text: str) -> tuple[list[int], torch.Tensor]:
    """(token ids of `text`, attention weights (layers, heads, tokens, tokens)) of the lesson
    model, as its attention layers recorded them (causal: zeros above the diagonal)."""
    model, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(text)
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    return ids, torch.stack([weights[0] for weights in rec.all("weights")])


def curve_series(curve: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """training.json's logged curve as {series: (steps, losses)}: the per-step training loss,
    and the train and validation losses of the periodic evaluations."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key, label in (("loss", "training loss (one batch)"), ("train_loss", "train (evaluation)"),
                       ("val_loss", "validation (evaluation)")):  # fmt: skip
        points = [(r["step"], r[key]) for r in curve if key in r]
        series[label] = ([s for s, _ in points], [v for _, v in points])
    return series
