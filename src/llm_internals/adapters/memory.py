"""Bytes a training setup holds: weights, gradients and Adam's two moments.

    weights    = every parameter and saved buffer (frozen or not, in its own dtype; NF4 codes
                 and scales for a QLoRA base; not recomputable caches such as RoPE's)
    gradients  = one tensor per trainable parameter, in its dtype
    adam       = two fp32 moments (m and v) per trainable parameter element

Full fine-tuning of an fp32 model: 4 + 4 + 8 = 16 bytes per parameter. LoRA: the weights stay,
while gradients and Adam states shrink to the adapters' r (in + out) per layer. Activations are
not counted (they depend on batch and context, not on the method).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TrainingBytes:
    weights: int
    gradients: int
    adam_states: int
    trainable_params: int
    total_params: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.adam_states


def training_bytes(model: nn.Module) -> TrainingBytes:
    """What `model` holds for training with Adam(W), counting each storage once (tied weights)."""
    seen: set[int] = set()
    weights = gradients = adam = trainable = total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        weights += tensor.numel() * tensor.element_size()
        if isinstance(tensor, nn.Parameter):
            total += tensor.numel()
            if tensor.requires_grad:
                trainable += tensor.numel()
                gradients += tensor.numel() * tensor.element_size()
                adam += 2 * 4 * tensor.numel()
    for module in model.modules():  # a quantised weight is buffers, but still parameters
        if hasattr(module, "dequantized_weight"):
            total += module.in_features * module.out_features
    return TrainingBytes(weights, gradients, adam, trainable, total)
