"""Absolute position encodings and the token embedding / tied head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

from llm_internals.layers.embedding import OutputHead, TokenEmbedding
from llm_internals.layers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    sinusoidal_table,
)


@pytest.mark.parametrize("dim", [8, 7])
def test_sinusoidal_table_follows_the_paper(dim):
    table = sinusoidal_table(20, dim).double().numpy()
    for pos in (0, 1, 13, 19):
        for j in range(dim):
            angle = pos / 10000 ** (2 * (j // 2) / dim)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(table[pos, j] - expected) < 1e-6


def test_sinusoidal_halves_layout_matches_hf_marian():
    hf = MarianSinusoidalPositionalEmbedding(30, 16)
    assert torch.allclose(sinusoidal_table(30, 16, layout="halves"), hf.create_weight(), atol=1e-6)


def test_position_modules_look_up_rows():
    positions = torch.tensor([[0, 3, 5]])
    sinusoidal = SinusoidalPositionalEmbedding(8, 6)
    assert torch.equal(sinusoidal(positions)[0, 1], sinusoidal.table[3])
    learned = LearnedPositionalEmbedding(8, 6)
    assert torch.equal(learned(positions)[0, 2], learned.weight[5])
    assert "table" not in sinusoidal.state_dict()  # fixed, not a weight
    assert np.isclose(sinusoidal.table[0, 1].item(), 1.0)  # cos(0)


def test_token_embedding_and_tied_head_match_torch():
    torch.manual_seed(0)
    embedding = TokenEmbedding(50, 12)
    head = OutputHead(12, 50)
    ids = torch.randint(0, 50, (2, 7))
    assert torch.equal(embedding(ids), F.embedding(ids, embedding.weight))
    hidden = torch.randn(2, 7, 12)
    assert torch.allclose(head(hidden), hidden @ head.weight.T, atol=1e-6)
    head.tie_to(embedding)
    assert head.is_tied_to(embedding) and head.weight is embedding.weight
    head(embedding(ids)).sum().backward()  # both uses accumulate into the one gradient
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
