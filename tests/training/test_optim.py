"""SGD, AdamW and Muon against torch.optim, step for step on a small model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.training.adamw import AdamW
from llm_internals.training.muon import Muon, muon_lr_scale, newton_schulz
from llm_internals.training.muon_adamw import MuonWithAdamW, split_params_by_role
from llm_internals.training.sgd import SGD

STEPS = 8


class TinyLM(nn.Module):
    """Embedding, a norm, two hidden matrices (one tall, one wide), a tied head."""

    def __init__(self, vocab: int = 13, dim: int = 8, hidden: int = 20) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        x = x + self.down(torch.tanh(self.up(self.norm(x))))
        return self.lm_head(x)


def _data(step: int):
    g = torch.Generator().manual_seed(100 + step)
    idx = torch.randint(0, 13, (4, 6), generator=g)
    return idx, torch.roll(idx, -1, dims=1)


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    idx, targets = _data(step)
    return nn.functional.cross_entropy(model(idx).reshape(-1, 13), targets.reshape(-1))


def _run_side_by_side(make_ours, make_ref, params_of=lambda m: m.parameters()):
    torch.manual_seed(0)
    model_ours = TinyLM()
    model_ref = copy.deepcopy(model_ours)
    ours, ref = make_ours(params_of(model_ours)), make_ref(params_of(model_ref))
    for step in range(STEPS):
        for model, opt in ((model_ours, ours), (model_ref, ref)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
        for (name, p_ours), p_ref in zip(
            model_ours.named_parameters(), model_ref.parameters(), strict=True
        ):
            torch.testing.assert_close(p_ours, p_ref, msg=f"{name} differs after step {step}")
    return model_ours, ours


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.9),
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        dict(lr=0.05, momentum=0.8, dampening=0.3),
    ],
)
def test_sgd_matches_torch(kwargs):
    _run_side_by_side(lambda p: SGD(p, **kwargs), lambda p: torch.optim.SGD(p, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)],
)
def test_adamw_matches_torch(kwargs):
    _, opt = _run_side_by_side(
        lambda p: AdamW(p, **kwargs), lambda p: torch.optim.AdamW(p, **kwargs)
    )
    # Its state is a torch.optim state dict, so the trainer can checkpoint it.
    state = opt.state_dict()
    assert state["state"][0]["step"].item() == STEPS
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def _matrices(model):
    return [p for p in model.parameters() if p.ndim == 2 and p is not model.wte.weight]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.02),
        dict(lr=0.02, nesterov=False, momentum=0.9, weight_decay=0.0),
        dict(lr=0.01, adjust_lr_fn="match_rms_adamw", ns_steps=3),
    ],
)
def test_muon_matches_torch(kwargs):
    _run_side_by_side(
        lambda p: Muon(p, **kwargs), lambda p: torch.optim.Muon(p, **kwargs), params_of=_matrices
    )


def test_newton_schulz_flattens_singular_values():
    g = torch.Generator().manual_seed(7)
    # A badly conditioned 16x6 matrix: singular values from 10 down to 0.1.
    u, _ = torch.linalg.qr(torch.randn(16, 6, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    s = torch.logspace(1, -1, 6, dtype=torch.float64)
    matrix = u @ torch.diag(s) @ v.T
    out = newton_schulz(matrix, dtype=torch.float64)
    out_s = torch.linalg.svdvals(out)
    assert out.shape == matrix.shape
    assert out_s.min() > 0.5 and out_s.max() < 1.25  # all pushed to ~1 (the quintic overshoots)
    # The singular vectors are kept: out ~ U diag(s') V^T with the same U, V.
    s_prime = torch.diag(u.T @ out @ v)
    torch.testing.assert_close(u @ torch.diag(s_prime) @ v.T, out)
    # Exact with the default bf16 against torch's own implementation.
    from torch.optim._muon import _zeropower_via_newtonschulz

    ref = _zeropower_via_newtonschulz(matrix.float(), (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert torch.equal(newton_schulz(matrix.float()), ref)


def test_muon_lr_scale_and_rejections():
    assert muon_lr_scale((40, 10)) == pytest.approx(2.0)
    assert muon_lr_scale((10, 40)) == 1.0
    assert muon_lr_scale((10, 40), "match_rms_adamw") == pytest.approx(0.2 * 40**0.5)
    with pytest.raises(LLMInternalsError, match="adjust_lr_fn"):
        muon_lr_scale((2, 2), "other")
    with pytest.raises(LLMInternalsError, match="2D"):
        Muon([nn.Parameter(torch.zeros(3))])
    with pytest.raises(LLMInternalsError, match="2D"):
        newton_schulz(torch.zeros(2, 2, 2))


def test_split_by_role_and_muon_with_adamw_matches_torch_pair():
    torch.manual_seed(0)
    model = TinyLM()
    roles = {r.name: (r.role, r.optimizer) for r in split_params_by_role(model)}
    assert roles == {
        "wte.weight": ("embedding", "AdamW"),  # also the tied lm_head, counted once
        "norm.weight": ("vector", "AdamW"),
        "norm.bias": ("vector", "AdamW"),
        "up.weight": ("hidden matrix", "Muon"),
        "up.bias": ("vector", "AdamW"),
        "down.weight": ("hidden matrix", "Muon"),
    }
    reference = copy.deepcopy(model)
    ours = MuonWithAdamW(model, muon_lr=0.02, adamw_lr=3e-3, adamw_kwargs=dict(weight_decay=0.0))
    ref_muon = torch.optim.Muon([reference.up.weight, reference.down.weight], lr=0.02)
    ref_adamw = torch.optim.AdamW(
        [reference.wte.weight, reference.norm.weight, reference.norm.bias, reference.up.bias],
        lr=3e-3,
        weight_decay=0.0,
    )
    for step in range(STEPS):
        ours.zero_grad()
        _loss(model, step).backward()
        ours.step()
        ref_muon.zero_grad()
        ref_adamw.zero_grad()
        _loss(reference, step).backward()
        ref_muon.step()
        ref_adamw.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    # The state dict round-trips into a fresh optimizer.
    fresh = MuonWithAdamW(model, muon_lr=0.02, adamw_lr=3e-3)
    fresh.load_state_dict(ours.state_dict())
    assert len(fresh.param_groups) == 2
    assert torch.equal(
        fresh.muon.state[model.up.weight]["momentum_buffer"],
        ours.muon.state[model.up.weight]["momentum_buffer"],
    )


def test_untied_head_goes_to_adamw():
    model = TinyLM()
    model.lm_head.weight = nn.Parameter(torch.randn(13, 8))
    roles = {r.name: r.role for r in split_params_by_role(model)}
    assert roles["lm_head.weight"] == "output head"


def test_split_by_role_on_the_library_gpt2_model():
    from llm_internals.models.config import ModelConfig
    from llm_internals.models.decoder import DecoderLM

    config = ModelConfig(
        vocab_size=32, d_model=8, n_layers=1, n_heads=2, max_seq_len=16, position="learned",
        norm="layernorm", ffn="mlp", activation="gelu_tanh", qkv_bias=True, tie_embeddings=False,
    )  # fmt: skip
    roles = {r.name: r.role for r in split_params_by_role(DecoderLM(config))}
    assert roles["tok_emb.weight"] == roles["pos_emb.weight"] == "embedding"
    assert roles["lm_head.weight"] == "output head"
    assert roles["blocks.0.attn.q_proj.weight"] == "hidden matrix"
    assert roles["blocks.0.ffn.down_proj.weight"] == "hidden matrix"
    assert roles["blocks.0.attn.q_proj.bias"] == roles["norm_f.weight"] == "vector"
