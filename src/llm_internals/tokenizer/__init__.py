"""Byte-level BPE: pre-tokenize, train (fast and naive), encode/decode, and file formats.

from llm_internals.tokenizer import Tokenizer, train_bpe
tok = train_bpe(text, vocab_size=8192)
ids = tok.encode("To be, or not to be")
"""

from llm_internals.tokenizer.naive import train_bpe_naive
from llm_internals.tokenizer.pretokenize import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, split_text
from llm_internals.tokenizer.tokenizer import Tokenizer
from llm_internals.tokenizer.trainer import tokenizer_from_trained, train_bpe, train_merges
from llm_internals.tokenizer.training_common import TrainedBPE

__all__ = [
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "PATTERNS",
    "TrainedBPE",
    "Tokenizer",
    "split_text",
    "tokenizer_from_trained",
    "train_bpe",
    "train_bpe_naive",
    "train_merges",
]
