"""Whole-model gradients without autograd vs autograd on the library's GPT-2-style DecoderLM,
in float64, plus central finite differences on a few coordinates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm_internals.errors import LLMInternalsError
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.training.backprop.gpt import gpt_loss_and_gradients, model_gradients
from llm_internals.training.backprop.gradcheck import compare_gradients, finite_difference

VOCAB = 17


def gpt2_config(**changes) -> ModelConfig:
    base = dict(
        vocab_size=VOCAB,
        d_model=16,
        n_layers=2,
        n_heads=2,
        max_seq_len=8,
        family="gpt2",
        position="learned",
        norm="layernorm",
        norm_eps=1e-5,
        ffn="mlp",
        activation="gelu_tanh",
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        tie_embeddings=True,
    )
    base.update(changes)
    return ModelConfig(**base)


def make_model(seed: int = 0, **changes) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(gpt2_config(**changes)).double()
    with torch.no_grad():  # move LayerNorm gains/biases off 1/0 so their gradients are generic
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 7), generator=g)
    targets = torch.randint(0, VOCAB, (3, 7), generator=g)
    targets[0, :2] = -100  # ignored positions must contribute nothing
    return ids, targets


@pytest.mark.parametrize("tied", [True, False])
def test_model_gradients_equal_autograd_in_float64(tied):
    model = make_model(tie_embeddings=tied)
    ids, targets = batch()
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    reference = {name: p.grad for name, p in model.named_parameters()}
    our_loss, ours = model_gradients(model, ids, targets)
    torch.testing.assert_close(our_loss, loss.detach(), rtol=1e-13, atol=0)
    assert set(ours) == set(reference)
    assert ("lm_head.weight" in ours) == (not tied)
    checks = compare_gradients(ours, reference)
    failed = [c for c in checks if not c.passed(1e-8)]
    assert not failed, failed
    # Only the key biases are structurally zero; every other tensor is checked relatively.
    assert {c.name for c in checks if c.structurally_zero} == {
        "blocks.0.attn.k_proj.bias",
        "blocks.1.attn.k_proj.bias",
    }


def test_model_gradients_match_finite_differences():
    model = make_model(seed=3)
    ids, targets = batch(seed=4)
    _, ours = model_gradients(model, ids, targets)
    params = dict(model.named_parameters())

    def loss_fn():
        return gpt_loss_and_gradients(
            {n: p.detach() for n, p in params.items() if n != "lm_head.weight"},
            model.config,
            ids,
            targets,
        )[0]

    coordinates = [
        ("tok_emb.weight", (int(ids[1, 2]), 3)),  # a token that occurs: lookup + head
        ("pos_emb.weight", (5, 0)),
        ("blocks.0.norm1.weight", (7,)),
        ("blocks.0.attn.q_proj.weight", (2, 9)),
        ("blocks.1.attn.v_proj.bias", (4,)),
        ("blocks.1.ffn.up_proj.weight", (30, 1)),
        ("norm_f.bias", (11,)),
    ]
    for name, index in coordinates:
        numeric = finite_difference(loss_fn, params[name], index)
        analytic = float(ours[name][index])
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)) + 1e-9, (name, index)


def test_unsupported_architectures_are_named():
    model = make_model()
    ids, targets = batch()
    model.config = model.config.replace(position="rope")
    with pytest.raises(LLMInternalsError, match="position"):
        model_gradients(model, ids, targets)
    with pytest.raises(LLMInternalsError, match="n_kv_heads"):
        gpt_loss_and_gradients({}, gpt2_config(n_kv_heads=1), ids, targets)
