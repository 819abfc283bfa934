"""Keeping experts busy evenly: the auxiliary loss, the router z-loss and the bias update.

Without balancing a router collapses: the experts chosen early get the gradient, improve, and
get chosen more. Three remedies:

* Switch auxiliary loss (Fedus et al.; HF `load_balancing_loss_func`):
      L_aux = E * sum_i f_i P_i
  f_i = (number of top-k slots given to expert i) / T, P_i = mean softmax probability of i.
  Both are 1/E-ish under uniform routing, so L_aux = k there (1 for Switch's k = 1); it grows
  when the experts that get the tokens are also the ones the router is confident about. f has no
  gradient; P carries it. Padding tokens are left out through a [T] mask.
* Router z-loss (ST-MoE): L_z = mean_t logsumexp(logits_t)^2 keeps the logits small, which
  keeps the softmax stable in low precision.
* Auxiliary-loss-free balancing (DeepSeek-V3, Wang et al. 2024): after each step
      b_i <- b_i + gamma * sign(mean_load - load_i)
  on the selection bias of the "sigmoid_grouped" router: overloaded experts become less likely to
  be picked, with no term in the loss and no effect on the combine weights.
"""

from __future__ import annotations

import torch


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How many (token, slot) pairs each expert received: [E] counts (float, for the maths)."""
    return torch.bincount(indices.reshape(-1), minlength=n_experts).to(torch.float32)


def switch_aux_loss(
    logits: torch.Tensor, top_k: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L_aux = E * sum_i f_i P_i over router logits [T, E] (minimum k under uniform routing).

    Selection here is top-k of the softmax, as in HF; `attention_mask` [T] (1 = real token)
    leaves padding out of both f and P.
    """
    n_experts = logits.shape[-1]
    probs = torch.softmax(_at_least_fp32(logits), dim=-1)
    selected = probs.topk(top_k, dim=-1).indices
    if attention_mask is None:
        attention_mask = torch.ones(logits.shape[0], device=logits.device)
    mask = attention_mask.reshape(-1).to(probs.dtype)
    one_hot = torch.nn.functional.one_hot(selected, n_experts).to(probs.dtype)  # [T, k, E]
    fraction = (one_hot.sum(dim=1) * mask[:, None]).sum(dim=0) / mask.sum()
    mean_prob = (probs * mask[:, None]).sum(dim=0) / mask.sum()
    return n_experts * (fraction * mean_prob).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_z = mean over tokens of logsumexp(logits)^2 (ST-MoE; coefficient 1e-3 there)."""
    return torch.logsumexp(_at_least_fp32(logits), dim=-1).square().mean()


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits upcast to fp32 (as HF), fp64 kept (exact gradient checks)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@torch.no_grad()
def update_selection_bias(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> torch.Tensor:
    """b <- b + gamma * sign(mean(load) - load), in place; returns b (DeepSeek-V3, gamma 1e-3)."""
    bias += gamma * torch.sign(load.mean() - load).to(bias.dtype)
    return bias


def load_coefficient_of_variation(load: torch.Tensor) -> float:
    """std / mean of the per-expert load: 0 when perfectly even, large when collapsed."""
    load = load.float()
    return float(load.std(unbiased=False) / load.mean())
