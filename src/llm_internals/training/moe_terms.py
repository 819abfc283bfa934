"""The MoE training terms: balancing losses added to the objective, the bias update after a step,
and what each step measured about the routers.

For a model with MoE layers (models whose config has `moe`), one optimizer step trains on

    loss = CE + aux_coef * L_aux + z_coef * L_z

    L_aux = (1/M) sum_{layers l} E * sum_i f_{l,i} P_{l,i}      Switch / HF load_balancing_loss
    L_z   = (1/M) sum_{layers l} mean_t logsumexp(logits_{l,t})^2          ST-MoE router z-loss

averaged (not summed) over the M MoE layers, so the coefficients mean the same at any depth and
L_aux is k under perfectly uniform routing (layers/moe_balance.py). HF Mixtral instead pools the
logits of all layers into one f and P; with one MoE layer the two are the same. Each micro-batch
adds its own terms (its tokens' routing), as the cross-entropy does.

After the optimizer step, with bias_rate = gamma > 0, every MoE router's selection bias moves
toward even load (auxiliary-loss-free balancing, DeepSeek-V3):

    b_i <- b_i + gamma * sign(mean_j c_j - c_i)

where c_i counts the (token, slot) pairs expert i received in the whole step (all micro-batches,
all processes). The bias changes which experts are picked, never the combine weights.

Measured per step: the two loss values (whether or not they are in the objective), the
coefficient of variation std/mean of each layer's expert load (0 = even; sqrt(E/k - 1) when every
token goes to the same k experts), averaged over layers, and the (token, expert) pairs dropped
over capacity (models with `capacity_factor`), summed over layers and micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from llm_internals.layers.moe import MoELayer
from llm_internals.layers.moe_balance import (
    expert_load,
    load_coefficient_of_variation,
    router_z_loss,
    switch_aux_loss,
    update_selection_bias,
)


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """The MoE layers of `model`, in order (empty for a dense model)."""
    return [module for module in model.modules() if isinstance(module, MoELayer)]


@dataclass
class MoEStepStats:
    """What one optimizer step measured about the routers (see the module docstring)."""

    aux_loss: float
    z_loss: float
    load_cv: float
    dropped: int
    loads: list[torch.Tensor] = field(default_factory=list)  # [E] per MoE layer

    def log_record(self) -> dict[str, float | int]:
        """The fields the trainer writes to log.jsonl."""
        return {
            "moe_aux_loss": self.aux_loss,
            "moe_z_loss": self.z_loss,
            "moe_load_cv": self.load_cv,
            "moe_dropped": self.dropped,
        }


class MoETerms:
    """Adds the balancing terms to each micro-batch's loss and updates the biases after a step.

    Use per optimizer step: `start_step()`, then for each micro-batch (right after its forward)
    `objective = add_terms(ce_loss)`, then after optimizer.step() `stats = finish_step()`.
    A model without MoE layers gets its loss back unchanged and no stats.
    """

    def __init__(
        self, model: nn.Module, aux_coef: float, z_coef: float, bias_rate: float = 0.0
    ) -> None:
        self.layers = moe_layers(model)
        self.aux_coef, self.z_coef, self.bias_rate = aux_coef, z_coef, bias_rate
        self.start_step()

    @property
    def enabled(self) -> bool:
        return bool(self.layers)

    def start_step(self) -> None:
        """Forget the previous step's routing counts."""
        self._aux: list[float] = []
        self._z: list[float] = []
        self._loads = [None] * len(self.layers)
        self._dropped = 0

    def balance_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_aux, L_z) of the routing each layer made in its last forward, layer-averaged."""
        aux = torch.stack(
            [
                switch_aux_loss(layer.last_routing.logits, layer.config.top_k)
                for layer in self.layers
            ]
        ).mean()
        z = torch.stack([router_z_loss(layer.last_routing.logits) for layer in self.layers]).mean()
        return aux, z

    def add_terms(self, loss: torch.Tensor) -> torch.Tensor:
        """loss + aux_coef * L_aux + z_coef * L_z for the micro-batch just run forward; records
        its loads, dropped pairs and loss values. A zero coefficient adds nothing at all."""
        if not self.enabled:
            return loss
        for i, layer in enumerate(self.layers):
            routing = layer.last_routing
            load = expert_load(routing.indices.detach(), layer.config.n_experts)
            self._loads[i] = load if self._loads[i] is None else self._loads[i] + load
            self._dropped += layer.last_dropped
        aux, z = self.balance_losses()
        self._aux.append(float(aux.detach()))
        self._z.append(float(z.detach()))
        if self.aux_coef:
            loss = loss + self.aux_coef * aux
        if self.z_coef:
            loss = loss + self.z_coef * z
        return loss

    def finish_step(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> MoEStepStats | None:
        """After optimizer.step(): the step's stats, and the bias update when bias_rate > 0.

        `reduce` averages a tensor over processes (DDP), so every process applies the same
        update from the global load; sign(mean - load) and the CV do not depend on the scale.
        Under DDP the reported loads are that per-process mean, while the loss values and the
        dropped count are this process's own.
        """
        if not self.enabled or self._loads[0] is None:
            return None
        loads = [load if reduce is None else reduce(load) for load in self._loads]
        if self.bias_rate:
            for layer, load in zip(self.layers, loads, strict=True):
                bias = layer.router.e_score_correction_bias
                update_selection_bias(bias, load.to(bias.device), self.bias_rate)
        cvs = [load_coefficient_of_variation(load) for load in loads]
        return MoEStepStats(
            aux_loss=sum(self._aux) / len(self._aux),
            z_loss=sum(self._z) / len(self._z),
            load_cv=sum(cvs) / len(cvs),
            dropped=self._dropped,
            loads=[load.cpu() for load in loads],
        )
