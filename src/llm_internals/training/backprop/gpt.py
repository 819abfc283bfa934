"""A whole GPT-2-style model's gradients without autograd.

    x_0    = E[ids] + P[positions]                 token + learned position embeddings
    x_l    = Block_l(x_{l-1})                      l = 1..L (see block.py)
    logits = LayerNorm_f(x_L) W_head^T             W_head = E when the embeddings are tied
    loss   = cross_entropy(logits, targets)

The backward pass runs the same list in reverse: the loss gradient softmax - onehot
(`loss.cross_entropy_grad`), the head, the final norm, each block from last to first, and the
two embedding tables. With tied embeddings E collects two gradients: one from the head (every
row, since every token is scored) and one from the lookup (only rows of tokens that occurred).

`model_gradients(model, ids, targets)` reads the parameters of a `models.decoder.DecoderLM`
with a GPT-2 configuration and returns gradients keyed by its parameter names, so they can be
compared one to one with autograd's `param.grad`.
"""

from __future__ import annotations

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.trace import record
from llm_internals.training.backprop.block import block_backward, block_forward
from llm_internals.training.backprop.layernorm import layernorm_backward, layernorm_forward
from llm_internals.training.backprop.linear import (
    embedding_backward,
    embedding_forward,
    linear_backward,
    linear_forward,
)
from llm_internals.training.loss import cross_entropy, cross_entropy_grad

# Architecture choices of the GPT-2 family that this hand-written backward pass implements.
GPT2_SHAPE = {
    "position": "learned",
    "norm": "layernorm",
    "norm_position": "pre",
    "ffn": "mlp",
    "activation": "gelu_tanh",
    "qk_norm": False,
    "sliding_window": None,
}


def check_gpt2_config(config) -> None:
    """Raise LLMInternalsError naming the first config field this backward pass does not cover."""
    for field, wanted in GPT2_SHAPE.items():
        if getattr(config, field) != wanted:
            raise LLMInternalsError(
                f"hand-written backprop covers GPT-2-style models only: config {field}="
                f"{getattr(config, field)!r}, needs {wanted!r}"
            )
    if config.n_kv_heads != config.n_heads:
        raise LLMInternalsError(
            f"hand-written backprop needs n_kv_heads == n_heads, got {config.n_kv_heads} and "
            f"{config.n_heads}"
        )
    if config.dropout != 0.0:
        raise LLMInternalsError(f"hand-written backprop needs dropout 0, got {config.dropout}")


def gpt_loss_and_gradients(
    params: dict[str, torch.Tensor],
    config,
    ids: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy of next-token predictions and d loss / d param for every parameter.

    `params` maps DecoderLM parameter names to tensors; "lm_head.weight" absent (or the same
    tensor as "tok_emb.weight") means tied embeddings.
    """
    check_gpt2_config(config)
    eps, n_heads = config.norm_eps, config.n_heads
    tied = "lm_head.weight" not in params or params["lm_head.weight"] is params["tok_emb.weight"]
    head = params["tok_emb.weight"] if tied else params["lm_head.weight"]
    positions = torch.arange(ids.shape[1], device=ids.device)

    # Forward, keeping what each backward step needs.
    x = embedding_forward(ids, params["tok_emb.weight"]) + embedding_forward(
        positions, params["pos_emb.weight"]
    )
    caches = []
    for layer in range(config.n_layers):
        prefix = f"blocks.{layer}."
        block_params = {n[len(prefix) :]: p for n, p in params.items() if n.startswith(prefix)}
        x, cache = block_forward(x, block_params, n_heads, eps)
        caches.append(cache)
    final, final_cache = layernorm_forward(
        x, params["norm_f.weight"], params.get("norm_f.bias"), eps
    )
    logits, head_cache = linear_forward(final, head)
    loss = cross_entropy(logits, targets, ignore_index=ignore_index)

    # Backward: the same steps in reverse order.
    grads: dict[str, torch.Tensor] = {}
    dlogits = cross_entropy_grad(logits, targets, ignore_index=ignore_index)
    dfinal, dhead, _ = linear_backward(dlogits, head_cache)
    dx, grads["norm_f.weight"], norm_f_bias = layernorm_backward(dfinal, final_cache)
    if norm_f_bias is not None:
        grads["norm_f.bias"] = norm_f_bias
    for layer in reversed(range(config.n_layers)):
        dx, block_grads = block_backward(dx, caches[layer])
        grads.update({f"blocks.{layer}.{name}": g for name, g in block_grads.items()})
        record("block_input_grad", dx, note=f"dL/dx entering block {layer}")
    dtok = embedding_backward(dx, ids, params["tok_emb.weight"].shape[0])
    grads["pos_emb.weight"] = embedding_backward(
        dx.sum(dim=0), positions, params["pos_emb.weight"].shape[0]
    )
    if tied:
        record("tied_embedding_grads", (dtok, dhead), note="(from the lookup, from the head)")
        grads["tok_emb.weight"] = dtok + dhead
    else:
        grads["tok_emb.weight"] = dtok
        grads["lm_head.weight"] = dhead
    return loss, grads


def model_gradients(
    model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and hand-computed gradients for a GPT-2-style DecoderLM, keyed by parameter name
    (a tied head appears once, as "tok_emb.weight", just as in `model.named_parameters()`)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    if model.lm_head.weight is model.tok_emb.weight:
        params.pop("lm_head.weight", None)
    else:
        params["lm_head.weight"] = model.lm_head.weight.detach()
    with torch.no_grad():
        return gpt_loss_and_gradients(params, model.config, ids, targets, ignore_index)
