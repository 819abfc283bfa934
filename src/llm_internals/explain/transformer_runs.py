"""The tiny runs of the `transformer` lesson: a BPE tokenizer trained on one line of Hamlet, a
GPT-2-shaped `DecoderLM` and an original-layout `Seq2SeqLM` (post-norm, sinusoidal, ReLU), each
run under a recorder so the lesson can list what they computed.
"""

from __future__ import annotations

import torch

from llm_internals.explain.tiny_models import (
    GPT2_STYLE,
    ORIGINAL_TRANSFORMER,
    tiny_config,
    tiny_decoder,
    tiny_seq2seq,
)
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.tokenizer import Tokenizer, train_bpe
from llm_internals.trace import Recording, recording

TRAINING_TEXT = "To be, or not to be, that is the question. " * 20
VOCAB_SIZE = 280
SEED = 0
SEQ2SEQ_SHAPE = dict(vocab_size=VOCAB_SIZE, d_model=16, n_layers=1, n_heads=4, max_seq_len=32)


def tiny_seq2seq_config() -> ModelConfig:
    """The original Transformer's layout (post-norm, sinusoidal, ReLU), tiny."""
    return tiny_config(**ORIGINAL_TRANSFORMER, **SEQ2SEQ_SHAPE)


def tokenizer() -> Tokenizer:
    return train_bpe(TRAINING_TEXT, vocab_size=VOCAB_SIZE)


def run_decoder(ids: list[int]) -> tuple[DecoderLM, Recording]:
    """A GPT-2-shaped tiny decoder (explain/tiny_models.py, exact GELU) run on `ids`."""
    shape = dict(vocab_size=VOCAB_SIZE, d_model=16, n_heads=4, max_seq_len=32)
    model = tiny_decoder(SEED, **{**GPT2_STYLE, "activation": "gelu", **shape})
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    return model, rec


def run_seq2seq(src: list[int], tgt: list[int]) -> Recording:
    model = tiny_seq2seq(SEED, **ORIGINAL_TRANSFORMER, **SEQ2SEQ_SHAPE)
    with recording() as rec, torch.no_grad():
        model(torch.tensor([src]), torch.tensor([tgt]))
    return rec
