"""One pre-norm GPT-2 transformer block, forward and backward, composed of the layer passes.

    h = x + Attention(LayerNorm1(x))          residual 1
    y = h + MLP(LayerNorm2(h)),   MLP(u) = W_down gelu(W_up u + b_up) + b_down

A residual connection y = x + f(x) has dy/dx = I + df/dx: the incoming gradient passes straight
through (the "gradient highway" that makes deep networks trainable) and the branch's gradient is
added to it. Parameter names follow `models.decoder.DecoderBlock` (norm1, attn.*, norm2, ffn.*).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_internals.training.backprop.activations import gelu_tanh_backward, gelu_tanh_forward
from llm_internals.training.backprop.attention import (
    SelfAttentionCache,
    self_attention_backward,
    self_attention_forward,
)
from llm_internals.training.backprop.layernorm import (
    LayerNormCache,
    layernorm_backward,
    layernorm_forward,
)
from llm_internals.training.backprop.linear import LinearCache, linear_backward, linear_forward

Params = dict[str, torch.Tensor]


@dataclass
class BlockCache:
    norm1: LayerNormCache
    attn: SelfAttentionCache
    norm2: LayerNormCache
    up: LinearCache
    pre_gelu: torch.Tensor
    down: LinearCache


def _sub(params: Params, prefix: str) -> Params:
    return {name[len(prefix) :]: p for name, p in params.items() if name.startswith(prefix)}


def block_forward(
    x: torch.Tensor, params: Params, n_heads: int, eps: float
) -> tuple[torch.Tensor, BlockCache]:
    """x (batch, T, d_model) -> block output, with `params` named as in DecoderBlock."""
    u, norm1 = layernorm_forward(x, params["norm1.weight"], params.get("norm1.bias"), eps)
    a, attn = self_attention_forward(u, _sub(params, "attn."), n_heads)
    h = x + a
    u2, norm2 = layernorm_forward(h, params["norm2.weight"], params.get("norm2.bias"), eps)
    pre_gelu, up = linear_forward(u2, params["ffn.up_proj.weight"], params.get("ffn.up_proj.bias"))
    m, down = linear_forward(
        gelu_tanh_forward(pre_gelu),
        params["ffn.down_proj.weight"],
        params.get("ffn.down_proj.bias"),
    )
    return h + m, BlockCache(norm1, attn, norm2, up, pre_gelu, down)


def block_backward(dy: torch.Tensor, cache: BlockCache) -> tuple[torch.Tensor, Params]:
    """(dL/dx, parameter gradients named as in DecoderBlock) from dL/dy."""
    grads: dict[str, torch.Tensor | None] = {}
    # y = h + m: dy flows to h unchanged and into the MLP branch.
    dact, grads["ffn.down_proj.weight"], grads["ffn.down_proj.bias"] = linear_backward(
        dy, cache.down
    )
    dpre = gelu_tanh_backward(dact, cache.pre_gelu)
    du2, grads["ffn.up_proj.weight"], grads["ffn.up_proj.bias"] = linear_backward(dpre, cache.up)
    dh_branch, grads["norm2.weight"], grads["norm2.bias"] = layernorm_backward(du2, cache.norm2)
    dh = dy + dh_branch
    # h = x + a: the same split again for the attention branch.
    du, attn_grads = self_attention_backward(dh, cache.attn)
    grads.update({f"attn.{name}": g for name, g in attn_grads.items()})
    dx_branch, grads["norm1.weight"], grads["norm1.bias"] = layernorm_backward(du, cache.norm1)
    return dh + dx_branch, {name: g for name, g in grads.items() if g is not None}
