"""MoE routers, dispatch, capacity, balancing and config errors (HF parity is in test_moe_hf.py)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.layers.moe_balance import (
    expert_load,
    load_coefficient_of_variation,
    router_z_loss,
    switch_aux_loss,
    update_selection_bias,
)
from llm_internals.layers.moe_dispatch import (
    DISPATCH_MODES,
    DISPATCHERS,
    capacity_keep_mask,
    expert_capacity,
)
from llm_internals.layers.moe_router import ROUTER_TYPES

ROUTER_SETTINGS = {
    "topk_softmax": {},
    "softmax_topk": {"norm_topk_prob": False},
    "sigmoid_grouped": {"n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5},
}


def make_layer(router: str, dtype=torch.float64, **overrides) -> MoELayer:
    torch.manual_seed(3)
    fields = {"n_experts": 8, "top_k": 2, "router": router, **ROUTER_SETTINGS[router], **overrides}
    layer = MoELayer(MoEConfig(d_model=16, d_expert=12, **fields)).to(dtype)
    with torch.no_grad():
        layer.router.e_score_correction_bias.normal_(0, 0.2)
    return layer


def test_mixtral_router_equals_renormalised_softmax_topk():
    """Mistral's form (softmax over the top-k logits) equals HF's (renormalised top-k of the
    full softmax), written out plainly here."""
    layer = make_layer("topk_softmax")
    layer.router.e_score_correction_bias.zero_()  # Mixtral has none (nonzero only if trained)
    x = torch.randn(40, 16, dtype=torch.float64)
    routing = layer.router(x)
    probs = torch.softmax(x @ layer.router.weight.t(), dim=-1)
    top, indices = probs.topk(2, dim=-1)
    assert torch.equal(routing.indices, indices)
    assert (routing.weights - top / top.sum(-1, keepdim=True)).abs().max() < 1e-12
    assert (routing.weights.sum(-1) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("capacity_factor", [None, 0.5])
@pytest.mark.parametrize("router", ROUTER_TYPES)
def test_three_dispatches_equal_forward_and_backward(router, capacity_factor):
    layer = make_layer(router, capacity_factor=capacity_factor, n_shared_experts=1)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    outputs, grads = [], []
    for mode in DISPATCH_MODES:
        layer.config.dispatch = mode
        layer.zero_grad()
        out = layer(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        # an expert no token chose has no gradient in the sparse paths, zeros in the dense one
        grads.append(torch.cat([_grad(p).flatten() for p in layer.parameters()]))
        if capacity_factor is not None:
            assert layer.last_dropped > 0
    for out, grad in zip(outputs[1:], grads[1:], strict=True):
        assert (out - outputs[0]).abs().max() < 1e-12
        assert (grad - grads[0]).abs().max() < 1e-12
    assert layer.router.weight.grad.abs().sum() > 0  # the weights carry gradient to the gate


def _grad(parameter: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(parameter) if parameter.grad is None else parameter.grad


def test_sorted_dispatch_against_the_formula():
    """y_t = sum_j w[t, j] Expert_idx[t, j](x_t), with random ids and weights (repeats included)."""
    layer = make_layer("topk_softmax")
    x = torch.randn(13, 16, dtype=torch.float64)
    indices = torch.randint(0, 8, (13, 3))
    weights = torch.randn(13, 3, dtype=torch.float64)
    expected = torch.stack(
        [
            sum(weights[t, j] * layer.experts[int(indices[t, j])](x[t]) for j in range(3))
            for t in range(13)
        ]
    )
    got = DISPATCHERS["sorted"](x, layer.experts, indices, weights)
    assert (got - expected).abs().max() < 1e-12


def test_capacity_keeps_first_choices_first():
    indices = torch.randint(0, 4, (30, 2))
    capacity = expert_capacity(0.75, 30, 2, 4)
    assert capacity == math.ceil(0.75 * 30 * 2 / 4)
    keep = capacity_keep_mask(indices, 4, capacity)
    taken = [0] * 4
    expected = torch.zeros_like(keep)
    for slot in range(2):
        for token in range(30):
            expert = int(indices[token, slot])
            expected[token, slot] = taken[expert] < capacity
            taken[expert] += 1
    assert torch.equal(keep, expected)
    layer = make_layer("topk_softmax", capacity_factor=0.75, n_experts=4)
    layer(torch.randn(30, 16, dtype=torch.float64))
    load = expert_load(layer.last_routing.indices, 4)
    assert layer.last_dropped == int((load - capacity).clamp(min=0).sum()) > 0


def test_shared_expert_is_applied_to_every_token():
    layer = make_layer("softmax_topk", d_shared=6, shared_expert_gate=True)
    x = torch.randn(9, 16, dtype=torch.float64)
    routed = DISPATCHERS["loop"](x, layer.experts, *_routing(layer, x))
    shared = torch.sigmoid(x @ layer.shared_gate.weight.t()) * layer.shared(x)
    assert (layer(x) - routed - shared).abs().max() < 1e-12
    assert (shared.abs().sum(-1) > 0).all()


def _routing(layer, x):
    routing = layer.router(x)
    return routing.indices, routing.weights


@pytest.mark.parametrize("masked", [False, True])
def test_aux_loss_matches_hf(masked):
    torch.manual_seed(5)
    logits = torch.randn(2 * 9, 6) * 2
    mask = torch.ones(2, 9)
    mask[1, 6:] = 0
    attention_mask = mask if masked else None
    expected = load_balancing_loss_func((logits,), 6, top_k=2, attention_mask=attention_mask)
    got = switch_aux_loss(logits, 2, None if attention_mask is None else mask.reshape(-1))
    assert abs(float(got) - float(expected)) < 1e-6


def test_aux_loss_is_k_under_uniform_routing_and_grows_when_skewed():
    assert abs(float(switch_aux_loss(torch.zeros(12, 8), 2)) - 2.0) < 1e-6
    skewed = torch.zeros(12, 8)
    skewed[:, :2] = 5.0
    assert float(switch_aux_loss(skewed, 2)) > 7.0


def test_router_z_loss():
    logits = torch.randn(10, 5, dtype=torch.float64) * 3
    expected = torch.log(torch.exp(logits).sum(-1)).pow(2).mean()
    assert abs(float(router_z_loss(logits)) - float(expected)) < 1e-6


def test_bias_update_balances_a_skewed_router():
    """Aux-loss-free balancing: a router that prefers two experts is evened out by the bias."""
    layer = make_layer("sigmoid_grouped", dtype=torch.float32, n_group=1, topk_group=1)
    with torch.no_grad():
        layer.router.e_score_correction_bias.zero_()
        layer.router.weight[:2] += 0.5  # experts 0 and 1 score higher for most tokens
    x = torch.randn(256, 16).abs()
    loads = []
    with torch.no_grad():
        for _ in range(60):
            load = expert_load(layer.router(x).indices, 8)
            loads.append(load_coefficient_of_variation(load))
            before = layer.router.e_score_correction_bias.clone()
            update_selection_bias(layer.router.e_score_correction_bias, load, gamma=0.01)
            delta = layer.router.e_score_correction_bias - before
            assert torch.equal(delta < 0, load > load.mean())  # the busy experts lose bias
    assert loads[0] > 1.0 and loads[-1] < 0.3 * loads[0]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"top_k": 9}, "num_experts_per_tok = 9"),
        ({"router": "sigmoid_grouped", "n_group": 3}, "n_group = 3"),
        ({"router": "sigmoid_grouped", "n_group": 2, "topk_group": 3}, "topk_group = 3"),
        (
            {"router": "sigmoid_grouped", "n_group": 4, "topk_group": 1, "top_k": 3},
            "topk_group = 1",
        ),
        ({"router": "hash"}, "router 'hash'"),
        ({"dispatch": "scatter"}, "dispatch 'scatter'"),
        ({"capacity_factor": 0.0}, "capacity_factor = 0.0"),
    ],
)
def test_bad_config_is_one_clear_error(fields, named):
    with pytest.raises(LLMInternalsError, match=named) as error:
        MoELayer(MoEConfig(d_model=8, d_expert=4, **{"n_experts": 8, "top_k": 2, **fields}))
    assert error.value.hint
