"""Cross-entropy, BCE, perplexity and bits per byte against torch.nn.functional and autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llm_internals.errors import LLMInternalsError
from llm_internals.training.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    bits_per_byte,
    cross_entropy,
    cross_entropy_fast,
    cross_entropy_grad,
    log_softmax,
    perplexity,
)


def _batch(seed: int, rows: int = 12, classes: int = 7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=g, dtype=dtype) * 3
    targets = torch.randint(0, classes, (rows,), generator=g)
    return logits, targets


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_equals_torch(smoothing, reduction):
    logits, targets = _batch(0)
    targets[[1, 5]] = -100
    ours = cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    ref = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_cross_entropy_sequence_shape_and_custom_ignore_index():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g)
    targets = torch.randint(0, 11, (2, 5), generator=g)
    targets[0, :2] = 3
    ours = cross_entropy(logits, targets, ignore_index=3)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=3)
    torch.testing.assert_close(ours, ref)


def test_log_softmax_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 999.0, -1000.0]])
    ours = log_softmax(logits)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, F.log_softmax(logits, dim=-1))
    targets = torch.tensor([2])
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_grad_is_softmax_minus_onehot_and_equals_autograd(smoothing, reduction):
    logits, targets = _batch(2)
    targets[3] = -100
    leaf = logits.clone().requires_grad_(True)
    F.cross_entropy(leaf, targets, label_smoothing=smoothing, reduction=reduction).backward()
    ours = cross_entropy_grad(logits, targets, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, leaf.grad, rtol=1e-12, atol=1e-14)
    assert torch.equal(ours[3], torch.zeros(7, dtype=logits.dtype))
    if smoothing == 0.0 and reduction == "sum":
        onehot = F.one_hot(targets[0], 7).to(logits.dtype)
        torch.testing.assert_close(ours[0], torch.softmax(logits[0], -1) - onehot)


def test_cross_entropy_rejects_bad_input():
    logits, targets = _batch(3)
    with pytest.raises(LLMInternalsError, match="shape"):
        cross_entropy(logits, targets[:-1])
    with pytest.raises(LLMInternalsError, match="outside the 7 classes"):
        cross_entropy(logits, torch.full_like(targets, 7))
    with pytest.raises(LLMInternalsError, match="integer"):
        cross_entropy(logits, targets.double())
    with pytest.raises(LLMInternalsError, match="label_smoothing"):
        cross_entropy(logits, targets, label_smoothing=1.5)
    with pytest.raises(LLMInternalsError, match="reduction"):
        cross_entropy(logits, targets, reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_equals_torch_including_saturated_probs(reduction):
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(10, generator=g, dtype=torch.float64)
    probs[0], probs[1] = 0.0, 1.0
    targets = torch.rand(10, generator=g, dtype=torch.float64)
    targets[0], targets[1] = 1.0, 0.0  # confidently wrong: torch clamps log at -100
    ours = binary_cross_entropy(probs, targets, reduction=reduction)
    ref = F.binary_cross_entropy(probs, targets, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(LLMInternalsError, match=r"\[0, 1\]"):
        binary_cross_entropy(probs * 2, targets)


def test_binary_cross_entropy_with_logits_and_its_gradient():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(9, generator=g, dtype=torch.float64) * 30
    targets = (torch.rand(9, generator=g) > 0.5).double()
    leaf = logits.clone().requires_grad_(True)
    ours = binary_cross_entropy_with_logits(leaf, targets)
    ref = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward()
    torch.testing.assert_close(leaf.grad, (torch.sigmoid(logits) - targets) / 9)


def test_perplexity_and_bits_per_byte():
    logits, targets = _batch(6, rows=50, classes=20)
    loss = F.cross_entropy(logits, targets)
    probs = torch.softmax(logits, -1)[torch.arange(50), targets]
    geometric_mean_inverse = float(torch.exp(-torch.log(probs).mean()))
    assert perplexity(loss) == pytest.approx(geometric_mean_inverse, rel=1e-12)
    # A uniform model over 256 byte values needs exactly 8 bits per byte.
    assert bits_per_byte(math.log(256), 1000, 1000) == pytest.approx(8.0)
    # Same total information spread over fewer, longer tokens gives the same bpb.
    total_bits = float(-torch.log2(probs).sum())
    assert bits_per_byte(loss, 50, 200) == pytest.approx(total_bits / 200, rel=1e-12)
    with pytest.raises(LLMInternalsError):
        bits_per_byte(1.0, 0, 10)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_fast_value_and_gradient_equal_torch(smoothing):
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, 9, generator=g, dtype=torch.float64) * 4
    targets = torch.randint(0, 9, (2, 5), generator=g)
    targets[1, 3] = -100
    ours_leaf = logits.clone().requires_grad_(True)
    ref_leaf = logits.clone().requires_grad_(True)
    ours = cross_entropy_fast(ours_leaf, targets, label_smoothing=smoothing)
    ref = F.cross_entropy(ref_leaf.reshape(-1, 9), targets.reshape(-1), label_smoothing=smoothing)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (ours * 3).backward()
    (ref * 3).backward()
    torch.testing.assert_close(ours_leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(  # finite differences as a second, independent check
        lambda z: cross_entropy_fast(z, targets, label_smoothing=smoothing),
        (logits.clone().requires_grad_(True),),
    )
