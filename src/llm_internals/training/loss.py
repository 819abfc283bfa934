"""Cross-entropy and friends, written out: the number a language model is trained to push down.

Categorical cross-entropy of logits z (one row per prediction, V classes) against target y:

    log p_i   = z_i - logsumexp(z),   logsumexp(z) = m + log sum_j exp(z_j - m),  m = max_j z_j
    loss      = -log p_y                                      (negative log-likelihood)
    smoothed  = (1 - eps) * (-log p_y) + eps * mean_j(-log p_j)   (label smoothing eps)

The mean is taken over the targets that are not `ignore_index` (padding), exactly as
`torch.nn.functional.cross_entropy` does. Subtracting the row maximum m before exponentiating
keeps every exponent <= 0, so nothing overflows, and the log is taken of a sum >= 1, so nothing
underflows to log(0).

The gradient with respect to the logits is the famous softmax(z) - onehot(y) (with label
smoothing: softmax(z) - q, q = (1 - eps) onehot(y) + eps / V), divided by the number of counted
targets for the mean. `cross_entropy_grad` computes it directly; the tests check it against
autograd.

Perplexity exp(loss) is the effective number of equally likely choices the model hesitates
between; bits per byte rescales the loss from nats per token to bits per byte of text so models
with different tokenizers can be compared.
"""

from __future__ import annotations

import math

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.softmax import softmax
from llm_internals.trace import is_recording, record

_REDUCTIONS = ("mean", "sum", "none")


def _check_classification_inputs(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, label_smoothing: float
) -> None:
    if logits.ndim < 1:
        raise LLMInternalsError("cross_entropy logits must have a class dimension, got a scalar")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise LLMInternalsError(
            f"cross_entropy targets have shape {tuple(targets.shape)} but logits have shape "
            f"{tuple(logits.shape)}; targets must have the logits' shape without the last "
            "(class) dimension",
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise LLMInternalsError(
            f"cross_entropy targets must be integer class ids, got dtype {targets.dtype}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise LLMInternalsError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    counted = targets[targets != ignore_index]
    num_classes = logits.shape[-1]
    if counted.numel() and (counted.min() < 0 or counted.max() >= num_classes):
        bad = counted[(counted < 0) | (counted >= num_classes)][0].item()
        raise LLMInternalsError(
            f"cross_entropy target {bad} is outside the {num_classes} classes [0, {num_classes})",
            hint=f"targets equal to ignore_index ({ignore_index}) are skipped",
        )


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the last dimension: z - logsumexp(z), with the max subtracted first."""
    row_max = logits.amax(dim=-1, keepdim=True)
    shifted = logits - row_max
    log_sum_shifted = torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    if is_recording():
        record("max", row_max)
        record("shifted", shifted, note="z - m: every exponent is <= 0")
        record("logsumexp", row_max + log_sum_shifted, note="m + log sum_j exp(z_j - m)")
    # (z - m) - log sum exp(z - m): subtracting m first keeps small differences of huge logits.
    return shifted - log_sum_shifted


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of `logits` (..., V) against integer `targets` (...).

    Equal to `F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ...)`. With
    reduction "none" the per-position losses come back in the targets' shape (0 where ignored).
    """
    if reduction not in _REDUCTIONS:
        raise LLMInternalsError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    _check_classification_inputs(logits, targets, ignore_index, label_smoothing)
    record("logits", logits)
    log_probs = log_softmax(logits)
    record("log_probs", log_probs, note="log p_j = z_j - logsumexp(z)")
    counted = targets != ignore_index
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets))
    target_nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    record("target_nll", target_nll, note="-log p_y for each position")
    if label_smoothing > 0.0:
        uniform_nll = -log_probs.mean(dim=-1)
        record("uniform_nll", uniform_nll, note="mean_j -log p_j")
        losses = (1.0 - label_smoothing) * target_nll + label_smoothing * uniform_nll
    else:
        losses = target_nll
    losses = torch.where(counted, losses, torch.zeros_like(losses))
    record("losses", losses)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        record("loss", total)
        return total
    count = counted.sum()
    if is_recording():
        record("count", int(count))
    loss = total / count
    record("loss", loss)
    return loss


def cross_entropy_grad(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """d cross_entropy / d logits, written out: (softmax(z) - q) / count, 0 on ignored rows.

    q is the target distribution: onehot(y), or (1 - eps) onehot(y) + eps / V with label
    smoothing eps. Divided by the number of counted targets for reduction "mean".
    """
    if reduction not in ("mean", "sum"):
        raise LLMInternalsError(
            f"cross_entropy_grad reduction must be 'mean' or 'sum', got {reduction!r}"
        )
    _check_classification_inputs(logits, targets, ignore_index, label_smoothing)
    num_classes = logits.shape[-1]
    probs = softmax(logits, dim=-1)
    counted = targets != ignore_index
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets))
    target_dist = torch.zeros_like(probs).scatter_(-1, safe_targets.unsqueeze(-1), 1.0)
    if label_smoothing > 0.0:
        target_dist = (1.0 - label_smoothing) * target_dist + label_smoothing / num_classes
    record("target_distribution", target_dist)
    grad = (probs - target_dist) * counted.unsqueeze(-1)
    if reduction == "mean":
        grad = grad / counted.sum()
    record("grad_logits", grad, note="softmax(z) - onehot(y), averaged over counted targets")
    return grad


def binary_cross_entropy(
    probs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """-(y log p + (1 - y) log(1 - p)), with each log clamped at -100 as torch does.

    The clamp keeps a confident wrong prediction (p exactly 0 or 1) finite instead of inf.
    """
    if reduction not in _REDUCTIONS:
        raise LLMInternalsError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if probs.shape != targets.shape:
        raise LLMInternalsError(
            f"binary_cross_entropy probs have shape {tuple(probs.shape)} but targets have "
            f"shape {tuple(targets.shape)}; they must match"
        )
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise LLMInternalsError(
            "binary_cross_entropy probs must lie in [0, 1]",
            hint="pass logits to binary_cross_entropy_with_logits instead",
        )
    log_p = torch.log(probs).clamp(min=-100.0)
    log_not_p = torch.log1p(-probs).clamp(min=-100.0)
    losses = -(targets * log_p + (1.0 - targets) * log_not_p)
    record("losses", losses, note="-(y log p + (1-y) log(1-p))")
    return _reduce(losses, reduction)


def binary_cross_entropy_grad(
    probs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """d binary_cross_entropy / d probs = -y / p + (1 - y) / (1 - p) (divided by N for "mean").

    Times the sigmoid's derivative p (1 - p) this becomes p - y: see the "backprop" lesson.
    """
    if reduction not in ("mean", "sum"):
        raise LLMInternalsError(
            f"binary_cross_entropy_grad reduction must be 'mean' or 'sum', got {reduction!r}"
        )
    grad = -targets / probs + (1.0 - targets) / (1.0 - probs)
    return grad / probs.numel() if reduction == "mean" else grad


def binary_cross_entropy_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(z), computed stably as max(z, 0) - z y + log(1 + e^-|z|).

    Its gradient with respect to z is sigmoid(z) - y: the binary case of softmax - onehot.
    """
    if reduction not in _REDUCTIONS:
        raise LLMInternalsError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.shape != targets.shape:
        raise LLMInternalsError(
            f"binary_cross_entropy_with_logits logits have shape {tuple(logits.shape)} but "
            f"targets have shape {tuple(targets.shape)}; they must match"
        )
    losses = logits.clamp(min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))
    record("losses", losses)
    return _reduce(losses, reduction)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses
    result = losses.sum() if reduction == "sum" else losses.mean()
    record("loss", result)
    return result


def perplexity(mean_loss: float | torch.Tensor) -> float:
    """exp(mean cross-entropy in nats): the effective number of choices per token."""
    return math.exp(float(mean_loss))


def bits_per_byte(mean_loss: float | torch.Tensor, num_tokens: int, num_bytes: int) -> float:
    """Mean loss in nats per token turned into bits per byte of the text those tokens encode.

    bpb = mean_loss * num_tokens / (num_bytes * ln 2). Independent of the tokenizer: a
    character-level model on ASCII text has num_tokens == num_bytes, so bpb = loss / ln 2.
    """
    if num_tokens <= 0 or num_bytes <= 0:
        raise LLMInternalsError(
            f"bits_per_byte needs positive counts, got num_tokens={num_tokens}, "
            f"num_bytes={num_bytes}"
        )
    return float(mean_loss) * num_tokens / (num_bytes * math.log(2.0))


class _CrossEntropyWithHandGradient(torch.autograd.Function):
    """Forward: mean cross-entropy via log-softmax. Backward: (softmax - q) / count, written out.

    Autograd through `cross_entropy` would store and replay each of its elementwise steps; this
    keeps only the log-probabilities and computes the gradient in one pass from them.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, label_smoothing):
        flat = logits.reshape(-1, logits.shape[-1])
        flat_targets = targets.reshape(-1)
        # torch.logsumexp is the max-shifted log sum exp written out in `log_softmax`, fused.
        log_probs = flat - torch.logsumexp(flat, dim=-1, keepdim=True)
        counted = flat_targets != ignore_index
        safe = torch.where(counted, flat_targets, torch.zeros_like(flat_targets))
        losses = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        if label_smoothing > 0.0:
            losses = (1.0 - label_smoothing) * losses - label_smoothing * log_probs.mean(dim=-1)
        count = counted.sum()
        ctx.save_for_backward(log_probs, safe, counted, count)
        ctx.label_smoothing = label_smoothing
        ctx.logits_shape = logits.shape
        return (losses * counted).sum() / count

    @staticmethod
    def backward(ctx, grad_output):
        log_probs, safe, counted, count = ctx.saved_tensors
        eps = ctx.label_smoothing
        # Row scale: 1/count for counted rows (times the incoming gradient), 0 for ignored ones.
        scale = (counted * (grad_output / count)).to(log_probs.dtype).unsqueeze(-1)
        grad = torch.exp(log_probs).mul_(scale)  # softmax(z) / count
        if eps > 0.0:
            grad -= scale * (eps / grad.shape[-1])
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, safe] -= (1.0 - eps) * scale.squeeze(-1)  # minus the (smoothed) one-hot
        return grad.reshape(ctx.logits_shape), None, None, None


def cross_entropy_fast(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy whose backward pass is the hand-written softmax - onehot.

    Same value and gradient as `cross_entropy` (and F.cross_entropy); for training, where
    autograd through the step-by-step version would cost several extra passes over the logits.
    """
    _check_classification_inputs(logits, targets, ignore_index, label_smoothing)
    return _CrossEntropyWithHandGradient.apply(logits, targets, ignore_index, label_smoothing)
