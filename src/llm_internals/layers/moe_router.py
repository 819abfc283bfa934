"""MoE routers: a linear gate scores every expert per token, then each token keeps k of them.

    logits = x W_g^T                                    [T, E]

Three published ways to turn logits into k expert ids and k combine weights:

* "topk_softmax" (Mixtral): idx = topk(logits, k); w = softmax(logits[idx]). A softmax over the
  k kept logits equals the renormalised top-k of the full softmax (HF Mixtral computes it that
  way): the weights of one token always sum to 1.
* "softmax_topk" (Qwen2-MoE, Qwen3-MoE): p = softmax(logits); idx = topk(p, k); w = p[idx],
  divided by its sum only when `norm_topk_prob` (Qwen2-MoE ships False, Qwen3-MoE True).
* "sigmoid_grouped" (DeepSeek-V3): s = sigmoid(logits). Selection uses s + b, where b is the
  per-expert `e_score_correction_bias` moved by auxiliary-loss-free balancing; the experts are
  split into `n_group` groups, a group scores the sum of its two best biased scores, only the
  `topk_group` best groups stay eligible, and the top k of those are chosen. The weights use the
  *unbiased* s: w = s[idx] / sum(s[idx]) (when `norm_topk_prob`) times `routed_scaling_factor`.
  The bias decides *which* experts, never *how much*.

Scores are computed in at least fp32 (fp64 stays fp64), so the weights come back in that dtype;
the dispatch casts them to the activations' dtype. HF's DeepSeek-V3 also does the gate matmul
itself in fp32; here it runs in the input dtype and only the scores are upcast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.trace import record

ROUTER_TYPES = ("topk_softmax", "softmax_topk", "sigmoid_grouped")


@dataclass
class Routing:
    """One routing decision for T tokens: the raw gate logits [T, E], the chosen expert ids
    [T, k] and their combine weights [T, k]."""

    logits: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor


def group_limited_topk(
    choice_scores: torch.Tensor, k: int, n_group: int, topk_group: int
) -> torch.Tensor:
    """Expert ids [T, k] chosen among the `topk_group` best of `n_group` expert groups.

    A group's score is the sum of its two highest choice scores (DeepSeek-V3); experts of the
    other groups are set to -inf before the final top-k. With n_group = 1 this is a plain top-k.
    """
    tokens, n_experts = choice_scores.shape
    grouped = choice_scores.view(tokens, n_group, n_experts // n_group)
    group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)  # [T, G]
    kept_groups = group_scores.topk(topk_group, dim=-1).indices
    group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
    expert_mask = group_mask.unsqueeze(-1).expand_as(grouped).reshape(tokens, n_experts)
    eligible = choice_scores.masked_fill(~expert_mask, float("-inf"))
    return eligible.topk(k, dim=-1).indices


class Router(nn.Module):
    """The linear gate W_g [E, d_model] and one of the three selection rules (module docstring).

    `e_score_correction_bias` is a buffer (not trained by gradients), added to the selection
    scores only, never to the weights: DeepSeek-V3's checkpoints ship it for "sigmoid_grouped"
    (added to s); for the other two it is zero unless auxiliary-loss-free balancing trains it
    (training/moe_terms.py), and is added to the logits ("topk_softmax") or the softmax
    probabilities ("softmax_topk").
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        kind: str = "topk_softmax",
        norm_topk_prob: bool = True,
        n_group: int = 1,
        topk_group: int = 1,
        routed_scaling_factor: float = 1.0,
    ):
        super().__init__()
        self.kind = kind
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.n_group = n_group
        self.topk_group = topk_group
        self.routed_scaling_factor = routed_scaling_factor
        self.weight = nn.Parameter(torch.randn(n_experts, d_model) / d_model**0.5)
        self.register_buffer("e_score_correction_bias", torch.zeros(n_experts))

    def forward(self, x: torch.Tensor) -> Routing:
        """Route tokens x [T, d_model]."""
        logits = x @ self.weight.t()
        record("router_logits", logits, note=f"x W_g^T, router {self.kind}")
        # scores in at least fp32 (as HF): in bf16 close logits would otherwise tie or swap
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        bias = self.e_score_correction_bias.to(logits.dtype)  # selection only (zero unless trained)
        if self.kind == "topk_softmax":
            indices = (logits + bias).topk(self.top_k, dim=-1).indices
            weights = torch.softmax(logits.gather(1, indices), dim=-1)
        elif self.kind == "softmax_topk":
            probs = torch.softmax(logits, dim=-1)
            indices = (probs + bias).topk(self.top_k, dim=-1).indices
            weights = probs.gather(1, indices)
            if self.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        else:  # "sigmoid_grouped" (the kind is validated by MoEConfig)
            scores = torch.sigmoid(logits)
            choice = scores + bias
            indices = group_limited_topk(choice, self.top_k, self.n_group, self.topk_group)
            weights = scores.gather(1, indices)
            if self.norm_topk_prob:
                weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
            weights = weights * self.routed_scaling_factor
        record("router_weights", weights, note=f"top-{self.top_k} combine weights")
        return Routing(logits=logits, indices=indices, weights=weights)
