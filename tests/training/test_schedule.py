"""Warmup + cosine schedule vs torch's LinearLR + CosineAnnealingLR; clipping vs
clip_grad_norm_; gradient accumulation vs the full-batch gradient."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.training.gradients import accumulate_gradients, clip_grad_norm, global_grad_norm
from llm_internals.training.schedule import WarmupCosine, set_lr


def test_warmup_cosine_equals_torch_schedulers():
    max_lr, min_lr, warmup, decay = 6e-4, 6e-5, 10, 50
    schedule = WarmupCosine(max_lr, min_lr, warmup, decay)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    ref = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(
                opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1
            ),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=decay - warmup, eta_min=min_lr),
        ],
        milestones=[warmup],
    )
    for step in range(decay + 1):
        assert schedule(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        ref.step()
    assert schedule(decay + 100) == min_lr
    assert schedule(warmup - 1) == schedule(warmup) == max_lr


def test_set_lr_scales_groups_by_their_base_lr_and_rejects_bad_schedules():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    schedule = WarmupCosine(1e-3, 0.0, 4, 20)
    assert set_lr(opt, schedule, 1, base_lrs=[0.02, 1e-3]) == pytest.approx(5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 5e-4])
    with pytest.raises(LLMInternalsError, match="base_lrs"):
        set_lr(opt, schedule, 1, base_lrs=[1.0])
    with pytest.raises(LLMInternalsError, match="min_lr"):
        WarmupCosine(1e-3, 1e-2, 1, 2)
    with pytest.raises(LLMInternalsError, match="warmup_steps"):
        WarmupCosine(1e-3, 0, 5, 2)


def _model_with_grads(seed: int, scale: float):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    (model(torch.randn(4, 5)).pow(2).sum() * scale).backward()
    return model


@pytest.mark.parametrize("scale,max_norm", [(100.0, 1.0), (1e-3, 1.0), (1.0, 0.5)])
def test_clip_grad_norm_equals_torch(scale, max_norm):
    ours = _model_with_grads(0, scale)
    ref = copy.deepcopy(ours)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        q.grad = p.grad.clone()
    total = clip_grad_norm(ours.parameters(), max_norm)
    ref_total = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    torch.testing.assert_close(total, ref_total)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    assert float(global_grad_norm(ours.parameters())) <= max_norm * (1 + 1e-6)


def test_accumulated_gradient_equals_full_batch_gradient():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3)).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    full = copy.deepcopy(model)
    full_loss = nn.functional.cross_entropy(full(x), y)
    full_loss.backward()
    micro = [(x[i : i + 3], y[i : i + 3]) for i in range(0, 12, 3)]
    loss = accumulate_gradients(micro, lambda b: nn.functional.cross_entropy(model(b[0]), b[1]))
    assert loss == pytest.approx(float(full_loss.detach()), rel=1e-12)
    for p, q in zip(model.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)
    with pytest.raises(LLMInternalsError):
        accumulate_gradients([], lambda b: b)


def test_warmup_from_zero_matches_a_hand_computation_and_lambda_lr():
    max_lr, min_lr, warmup, decay = 1e-3, 1e-4, 4, 12
    schedule = WarmupCosine(max_lr, min_lr, warmup, decay, from_zero=True)
    # by hand: 0, 1/4, 2/4, 3/4 of the peak, the peak at step == warmup, then the cosine
    assert [schedule(s) for s in range(5)] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert schedule(8) == pytest.approx(min_lr + (max_lr - min_lr) * 0.5)  # halfway: cos = 0
    assert schedule(decay) == pytest.approx(min_lr)

    def factor(step):  # the textbook formula, written independently, as a LambdaLR multiplier
        if step < warmup:
            return step / warmup
        t = min(step - warmup, decay - warmup) / (decay - warmup)
        return (min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * t))) / max_lr

    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for step in range(decay + 5):
        assert schedule(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        opt.step()
        ref.step()
    default = WarmupCosine(max_lr, min_lr, warmup, decay)
    assert default(0) == pytest.approx(2.5e-4) and default(warmup - 1) == max_lr


def test_non_finite_peak_lr_is_refused():
    with pytest.raises(LLMInternalsError, match="max_lr < inf"):
        WarmupCosine(float("inf"), 0.0, 1, 2)
