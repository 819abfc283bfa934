"""The 2-2-1 sigmoid network of the "backprop" lesson, forward and backward by hand.

    z1 = x W1^T + b1,   h = sigmoid(z1)          hidden layer: 2 inputs -> 2 units
    z2 = h W2^T + b2,   p = sigmoid(z2)          output layer: 2 units -> 1 probability
    L  = BCE(p, y) = -(y log p + (1 - y) log(1 - p))

Backward, one chain-rule factor at a time (each is recorded under the name in brackets):

    dL/dp   = -y/p + (1-y)/(1-p)                 [dL_dp]
    dp/dz2  = p (1 - p)                          [dp_dz2]
    dL/dz2  = dL/dp * dp/dz2  (= p - y)          [dL_dz2]
    dL/dW2  = dL/dz2^T h,  dL/db2 = dL/dz2       [dL_dW2, dL_db2]
    dL/dh   = dL/dz2 W2                          [dL_dh]
    dh/dz1  = h (1 - h)                          [dh_dz1]
    dL/dz1  = dL/dh * dh/dz1                     [dL_dz1]
    dL/dW1  = dL/dz1^T x,  dL/db1 = dL/dz1       [dL_dW1, dL_db1]

It is built from the same pieces as the transformer's backward pass (`linear_*`, `sigmoid_*`)
and the library's loss functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llm_internals.trace import record
from llm_internals.training.backprop.activations import (
    sigmoid_backward,
    sigmoid_forward,
    sigmoid_local_grad,
)
from llm_internals.training.backprop.linear import LinearCache, linear_backward, linear_forward
from llm_internals.training.loss import binary_cross_entropy, binary_cross_entropy_grad

PARAM_NAMES = ("W1", "b1", "W2", "b2")


@dataclass
class TwoLayerForward:
    x: torch.Tensor
    targets: torch.Tensor
    hidden: torch.Tensor
    probs: torch.Tensor
    loss: torch.Tensor
    caches: dict[str, LinearCache] = field(default_factory=dict)


def two_layer_forward(
    params: dict[str, torch.Tensor], x: torch.Tensor, targets: torch.Tensor
) -> TwoLayerForward:
    """Forward pass of x (N, 2) with targets (N, 1) in [0, 1]; records z1, h, z2, p, loss."""
    z1, cache1 = linear_forward(x, params["W1"], params["b1"])
    record("z1", z1, note="x W1^T + b1")
    hidden = sigmoid_forward(z1)
    record("h", hidden, note="sigmoid(z1)")
    z2, cache2 = linear_forward(hidden, params["W2"], params["b2"])
    record("z2", z2, note="h W2^T + b2")
    probs = sigmoid_forward(z2)
    record("p", probs, note="sigmoid(z2)")
    loss = binary_cross_entropy(probs, targets)
    record("L", loss)
    return TwoLayerForward(x, targets, hidden, probs, loss, {"layer1": cache1, "layer2": cache2})


def two_layer_backward(fwd: TwoLayerForward) -> dict[str, torch.Tensor]:
    """Every parameter's gradient, with each chain-rule factor recorded on the way."""
    dL_dp = binary_cross_entropy_grad(fwd.probs, fwd.targets)
    record("dL_dp", dL_dp, note="-y/p + (1-y)/(1-p), over N examples")
    record("dp_dz2", sigmoid_local_grad(fwd.probs), note="p (1 - p)")
    dL_dz2 = sigmoid_backward(dL_dp, fwd.probs)
    record("dL_dz2", dL_dz2, note="dL/dp * dp/dz2 = (p - y) / N")
    dL_dh, dL_dW2, dL_db2 = linear_backward(dL_dz2, fwd.caches["layer2"])
    record("dL_dW2", dL_dW2)
    record("dL_db2", dL_db2)
    record("dL_dh", dL_dh, note="dL/dz2 W2")
    record("dh_dz1", sigmoid_local_grad(fwd.hidden), note="h (1 - h)")
    dL_dz1 = sigmoid_backward(dL_dh, fwd.hidden)
    record("dL_dz1", dL_dz1)
    _, dL_dW1, dL_db1 = linear_backward(dL_dz1, fwd.caches["layer1"])
    record("dL_dW1", dL_dW1)
    record("dL_db1", dL_db1)
    return {"W1": dL_dW1, "b1": dL_db1, "W2": dL_dW2, "b2": dL_db2}


def gradient_descent_step(
    params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float
) -> dict[str, torch.Tensor]:
    """theta - lr * dL/dtheta for every parameter (new tensors; `params` is left unchanged)."""
    return {name: params[name] - lr * grads[name] for name in params}
