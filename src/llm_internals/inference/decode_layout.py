"""Decode-friendly weight layout: the same linear weights, stored column-major.

Batch-1 decoding is bound by how fast the weights stream from memory; this module holds the
layout changes that make the BLAS stream them faster without changing any value.
"""

from __future__ import annotations

import torch


def use_decode_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Store every linear weight column-major (same values and shape, transposed memory layout).

    A batch-1 decode step is a chain of matrix-vector products that read every weight once, so
    its speed is how fast the weights stream from memory. torch's `F.linear(x, W)` computes
    x W^T; with W stored row-major (out, in) the BLAS runs its transposed GEMV, measured here at
    about half the bandwidth of the plain GEMV it runs when W^T (in, out) is contiguous (50257 x
    768 head, 1 thread: 20.8 ms vs 9.4 ms). Re-laying W as the transpose of a contiguous (in, out)
    matrix gives the plain kernel without changing any value, parameter shape or model code.
    Returns the model (changed in place); saving still writes ordinary contiguous tensors.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) or module is getattr(model, "lm_head", None):
                weight = module.weight
                if weight.dim() == 2 and weight.is_contiguous():
                    weight.data = weight.data.t().contiguous().t()
    return model
