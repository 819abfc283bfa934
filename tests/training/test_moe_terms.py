"""MoE training terms (training/moe_terms.py): the aux and z terms' gradients against finite
differences, the bias update against its formula, and the selection bias of every router kind."""

from __future__ import annotations

import pytest
import torch

from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.training.moe_terms import MoETerms


def make_layer(router: str = "topk_softmax", n_experts: int = 6, top_k: int = 2, **kw):
    torch.manual_seed(0)
    config = MoEConfig(d_model=8, d_expert=5, n_experts=n_experts, top_k=top_k, router=router, **kw)
    return MoELayer(config).double()


def direct_terms(weight: torch.Tensor, x: torch.Tensor, top_k: int) -> tuple:
    """L_aux and L_z written out from the router weight (no library code): E * sum_i f_i P_i
    with f from the top-k of the softmax, and mean logsumexp^2."""
    logits = x @ weight.t()
    probs = torch.softmax(logits, dim=-1)
    chosen = probs.topk(top_k, dim=-1).indices
    counts = torch.zeros(weight.shape[0], dtype=x.dtype)
    for row in chosen:
        for e in row:
            counts[e] += 1
    f = counts / x.shape[0]
    aux = weight.shape[0] * (f * probs.mean(dim=0)).sum()
    z = (torch.logsumexp(logits, dim=-1) ** 2).mean()
    return aux, z


@pytest.mark.parametrize("router", ["topk_softmax", "softmax_topk", "sigmoid_grouped"])
def test_balance_terms_gradient_reaches_router_and_matches_finite_differences(router):
    layer = make_layer(router)
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    aux_coef, z_coef = 0.3, 0.07
    terms = MoETerms(layer, aux_coef, z_coef)
    layer(x)
    zero = torch.zeros((), dtype=torch.float64)
    terms.add_terms(zero).backward()
    grad = layer.router.weight.grad
    assert grad is not None and grad.abs().max() > 1e-3  # the terms reach the router

    tokens = x.reshape(-1, 8)
    weight = layer.router.weight.detach().clone()

    def objective(w: torch.Tensor) -> float:
        aux, z = direct_terms(w, tokens, 2)
        return float(aux_coef * aux + z_coef * z)

    eps = 1e-5
    numeric = torch.zeros_like(weight)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in weight.shape)):
        i, j = int(idx[0]), int(idx[1])
        plus, minus = weight.clone(), weight.clone()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric[i, j] = (objective(plus) - objective(minus)) / (2 * eps)
    rel = (grad - numeric).norm() / numeric.norm()
    assert rel < 1e-8, rel
    # no gradient reaches the experts: the terms depend on the router only
    assert all(p.grad is None for p in layer.experts.parameters())


def test_terms_are_averaged_over_layers_and_micro_batches():
    model = torch.nn.Sequential(make_layer(), make_layer("softmax_topk", n_experts=4))
    torch.manual_seed(1)
    terms = MoETerms(model, 1.0, 1.0)
    values = []
    for _ in range(2):  # two micro-batches
        x = torch.randn(5, 8, dtype=torch.float64)
        model(x)
        per_layer = []
        for layer in model:
            h = x if layer is model[0] else model[0](x)
            per_layer.append(direct_terms(layer.router.weight.detach(), h.detach(), 2))
        values.append(per_layer)
        terms.add_terms(torch.zeros((), dtype=torch.float64))
    stats = terms.finish_step()
    aux = sum(float(a) for step in values for a, _ in step) / 4
    z = sum(float(z) for step in values for _, z in step) / 4
    assert stats.aux_loss == pytest.approx(aux, rel=1e-12)
    assert stats.z_loss == pytest.approx(z, rel=1e-12)


def test_zero_coefficients_add_nothing():
    layer = make_layer()
    terms = MoETerms(layer, 0.0, 0.0)
    loss = layer(torch.randn(4, 8, dtype=torch.float64)).square().mean()
    assert terms.add_terms(loss) is loss


@pytest.mark.parametrize("router", ["topk_softmax", "softmax_topk", "sigmoid_grouped"])
def test_bias_update_follows_the_formula_over_micro_batches(router):
    layer = make_layer(router, n_experts=6, top_k=2)
    gamma = 0.01
    bias0 = torch.tensor([0.0, 0.02, -0.01, 0.005, 0.0, -0.03], dtype=torch.float64)
    layer.router.e_score_correction_bias.copy_(bias0)
    terms = MoETerms(layer, 0.0, 0.0, bias_rate=gamma)
    counts = [0] * 6
    for seed in (3, 4):
        torch.manual_seed(seed)
        layer(torch.randn(9, 8, dtype=torch.float64))
        for e in layer.last_routing.indices.reshape(-1).tolist():
            counts[e] += 1
        terms.add_terms(torch.zeros(()))
    terms.finish_step()
    mean = sum(counts) / 6
    expected = torch.tensor(
        [
            b + gamma * ((mean > c) - (mean < c))
            for b, c in zip(bias0.tolist(), counts, strict=True)
        ],
        dtype=torch.float64,
    )
    assert torch.equal(layer.router.e_score_correction_bias, expected)
    assert any(c > mean for c in counts) and any(c < mean for c in counts)


@pytest.mark.parametrize("router", ["topk_softmax", "softmax_topk", "sigmoid_grouped"])
def test_selection_bias_picks_experts_but_leaves_weights(router):
    """Large biases on experts 1 and 4 make every token choose them; the weights are those of
    the unbiased scores of the chosen experts, as without a bias."""
    layer = make_layer(router, norm_topk_prob=True)
    x = torch.randn(10, 8, dtype=torch.float64)
    layer.router.e_score_correction_bias[1] = 100.0
    layer.router.e_score_correction_bias[4] = 60.0  # unequal: a shift would not cancel
    routing = layer.router(x)
    assert set(routing.indices.reshape(-1).tolist()) == {1, 4}
    logits = x @ layer.router.weight.detach().t()
    chosen = routing.indices
    if router == "sigmoid_grouped":
        scores = torch.sigmoid(logits).gather(1, chosen)
    else:
        scores = torch.softmax(logits, dim=-1).gather(1, chosen)
    expected = scores / scores.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(routing.weights, expected, rtol=1e-12, atol=1e-12)
