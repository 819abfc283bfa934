"""Corpora: obtaining, caching, verifying and splitting text to train on."""

from llm_internals.data.corpus import CORPORA, corpus, corpus_home
from llm_internals.data.split import train_val_split

__all__ = ["CORPORA", "corpus", "corpus_home", "train_val_split"]
