"""The lessons' shared tiny models: the documented shapes, seeding that reproduces weights, and
the GPT-2 and original-Transformer layouts."""

from __future__ import annotations

import torch

from llm_internals.explain.tiny_models import (
    GPT2_STYLE,
    ORIGINAL_TRANSFORMER,
    TINY_ALPHABET,
    tiny_decoder,
    tiny_seq2seq,
    tiny_tokenizer,
)
from llm_internals.layers.norm import LayerNorm
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                  strict=True))  # fmt: skip


def test_default_shape_and_tokenizer():
    tok = tiny_tokenizer()
    assert tok.vocab_size == len(TINY_ALPHABET) == 29
    assert tok.decode(tok.encode("to be, or not.")) == "to be, or not."
    model = tiny_decoder(0)
    c = model.config
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.head_dim, c.d_ff) == (
        29,
        8,
        2,
        2,
        4,
        16,
    )
    assert (c.position, c.norm, c.ffn) == ("rope", "rmsnorm", "gated") and not model.training


def test_seed_reproduces_the_weights_and_leaves_the_stream_where_a_script_would():
    a, b, c = tiny_decoder(3), tiny_decoder(3), tiny_decoder(4)
    assert _same_weights(a, b) and not _same_weights(a, c)
    tiny_decoder(5)
    after_model = torch.rand(3)
    torch.manual_seed(5)  # what a script does: seed, build the model, draw on
    DecoderLM(ModelConfig(vocab_size=29, d_model=8, n_layers=2, n_heads=2, d_ff=16))
    assert torch.equal(after_model, torch.rand(3))


def test_gpt2_and_original_transformer_layouts():
    gpt2 = tiny_decoder(0, **GPT2_STYLE, d_model=16)
    c = gpt2.config
    assert (c.position, c.norm, c.ffn, c.activation, c.d_ff) == ("learned", "layernorm", "mlp",
                                                                 "gelu_tanh", 64)  # fmt: skip
    assert c.tie_embeddings and gpt2.lm_head.weight is gpt2.tok_emb.weight
    assert isinstance(gpt2.blocks[0].norm1, LayerNorm)
    seq2seq = tiny_seq2seq(0, **ORIGINAL_TRANSFORMER, n_layers=1)
    c = seq2seq.config
    assert (c.position, c.norm_position, c.activation, c.d_ff) == ("sinusoidal", "post", "relu", 32)
    logits = seq2seq(torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]]))
    assert logits.shape == (1, 2, 29)
