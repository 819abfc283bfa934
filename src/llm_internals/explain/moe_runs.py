"""The small seeded MoE runs of the `moe` lesson: one token through the three routers, FLOPs
counted, a balancing experiment and the tokens it drops at each capacity.

Every run is the library's MoELayer (layers/moe.py) with its real router, dispatch and
balancing functions (layers/moe_balance.py); only the sizes are tiny so that a lesson shows
every number and builds in well under a second.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.layers.moe_balance import (
    expert_load,
    load_coefficient_of_variation,
    switch_aux_loss,
    update_selection_bias,
)
from llm_internals.layers.moe_dispatch import expert_capacity
from llm_internals.trace import recording

D_MODEL, D_EXPERT, N_EXPERTS, TOP_K = 8, 16, 8, 2
SEED = 0
# The published settings of each router type, at this layer's size (DeepSeek-V3 uses 8 groups
# of 32 experts, keeps 4, and scales the weights by 2.5; here 4 groups of 2, 2 kept).
ROUTER_SETTINGS: dict[str, dict] = {
    "topk_softmax": {},
    "softmax_topk": {"norm_topk_prob": False},
    "sigmoid_grouped": {"n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5},
}
# The selection bias of the DeepSeek router, as the bias update leaves it when expert 5 has been
# overloaded: its bias went down, so it is picked less.
SELECTION_BIAS = [0.0, 0.0, 0.0, 0.0, 0.0, -0.15, 0.0, 0.0]

# The balancing experiment: a router skewed toward experts 0 and 1 (their gate rows lean toward
# the inputs' mean), trained to imitate a random linear map.
BATCH, STEPS, LR = 128, 40, 0.01
SKEW = 0.6
AUX_COEF = 0.1  # large for a 40-step run (HF Mixtral's default is 0.001, Switch's 0.01)
GAMMA = 0.02  # DeepSeek-V3 uses 0.001 over far more steps
CAPACITY_FACTORS = (0.5, 1.0, 1.25, 2.0)
BAR, SPACE = "▇", "░"  # one BAR per BAR_PAIRS (token, expert) pairs in the load histogram
BAR_PAIRS = 8


def moe_layer(router: str = "topk_softmax", **overrides) -> MoELayer:
    """A seeded MoELayer; every router type gets the same gate weights W_g."""
    torch.manual_seed(SEED)
    fields = {**ROUTER_SETTINGS[router], **overrides}
    config = MoEConfig(D_MODEL, D_EXPERT, N_EXPERTS, TOP_K, router=router, **fields)
    return MoELayer(config)


def one_token() -> torch.Tensor:
    """The token vector the router section follows: (1, D_MODEL)."""
    return torch.randn(1, D_MODEL, generator=torch.Generator().manual_seed(SEED + 1))


def with_capacity(layer: MoELayer, capacity_factor: float) -> MoELayer:
    """The same weights with an expert capacity (MoEConfig.capacity_factor)."""
    capped = MoELayer(dataclasses.replace(layer.config, capacity_factor=capacity_factor))
    capped.load_state_dict(layer.state_dict())
    return capped


@dataclass
class BalanceRun:
    """One training run: the trained layer, the expert load of every step, the aux loss of the
    first and last step, and a batch of the input distribution for later checks."""

    method: str
    layer: MoELayer
    loads: list[torch.Tensor]
    aux_losses: list[float]
    batch: torch.Tensor

    @property
    def variation(self) -> list[float]:
        """Coefficient of variation of the load, step by step."""
        return [load_coefficient_of_variation(load) for load in self.loads]


def skewed_layer(router: str) -> tuple[MoELayer, torch.Tensor]:
    """A layer whose experts 0 and 1 win most tokens, and the inputs' mean direction mu."""
    mu = torch.randn(D_MODEL, generator=torch.Generator().manual_seed(SEED + 2))
    overrides = {"n_group": 1, "topk_group": 1} if router == "sigmoid_grouped" else {}
    layer = moe_layer(router, **overrides)
    with torch.no_grad():
        layer.router.weight[:2] += SKEW * mu / mu.norm()
    return layer, mu


def balance_run(method: str, aux_coef: float = AUX_COEF, gamma: float = GAMMA) -> BalanceRun:
    """STEPS Adam steps on the mean squared error to a fixed random linear map, with
    method "none", "aux" (+ aux_coef x switch_aux_loss) or "bias" (the DeepSeek router and
    update_selection_bias after each step). Same data, same start for all three."""
    router = "sigmoid_grouped" if method == "bias" else "topk_softmax"
    layer, mu = skewed_layer(router)
    torch.manual_seed(SEED + 3)
    teacher = torch.nn.Linear(D_MODEL, D_MODEL).requires_grad_(False)
    data = torch.Generator().manual_seed(SEED + 4)
    optimizer = torch.optim.Adam(layer.parameters(), lr=LR)
    loads, aux_losses = [], []
    for _ in range(STEPS):
        x = torch.randn(BATCH, D_MODEL, generator=data) + mu
        loss = (layer(x) - teacher(x)).square().mean()
        routing = layer.last_routing
        aux = switch_aux_loss(routing.logits, TOP_K)
        if method == "aux":
            loss = loss + aux_coef * aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loads.append(expert_load(routing.indices, N_EXPERTS))
        aux_losses.append(float(aux.detach()))
        if method == "bias":
            update_selection_bias(layer.router.e_score_correction_bias, loads[-1], gamma)
    batch = torch.randn(BATCH, D_MODEL, generator=data) + mu
    return BalanceRun(method, layer, loads, aux_losses, batch)


@functools.cache
def one_thread_runs(aux_coef: float = AUX_COEF, gamma: float = GAMMA) -> dict[str, BalanceRun]:
    """The three runs on one torch thread (tiny matmuls only wait for each other on more);
    computed once per process (they are deterministic and read, never changed, afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {m: balance_run(m, aux_coef, gamma) for m in ("none", "aux", "bias")}
    finally:
        torch.set_num_threads(threads)


def routed(router: str, **overrides) -> dict[str, torch.Tensor]:
    """one_token() through the layer with `router` (the DeepSeek router with SELECTION_BIAS):
    the logits and weights the router recorded, and the chosen expert ids."""
    layer = moe_layer(router, **overrides)
    if router == "sigmoid_grouped":
        with torch.no_grad():
            layer.router.e_score_correction_bias.copy_(torch.tensor(SELECTION_BIAS))
    with recording() as rec, torch.no_grad():
        layer(one_token())
    return {"logits": rec.get("router_logits")[0], "indices": layer.last_routing.indices[0],
            "weights": rec.get("router_weights")[0]}  # fmt: skip


def choice_rows(routing: dict[str, torch.Tensor], scores: torch.Tensor) -> list[list]:
    """[slot, expert, its score, its weight] per chosen expert."""
    pairs = zip(routing["indices"].tolist(), routing["weights"].tolist(), strict=True)
    return [[slot, e, float(scores[e]), w] for slot, (e, w) in enumerate(pairs)]


def group_breakdown(scores: torch.Tensor) -> tuple[list[list], torch.Tensor]:
    """The DeepSeek router's view of sigmoid scores [E]: [expert, group, s, bias, s + bias] rows
    and each group's score, the sum of its two best biased scores."""
    bias = torch.tensor(SELECTION_BIAS)
    biased = scores + bias
    groups = ROUTER_SETTINGS["sigmoid_grouped"]["n_group"]
    size = N_EXPERTS // groups
    rows = [[e, e // size, float(scores[e]), float(bias[e]), float(biased[e])]
            for e in range(N_EXPERTS)]  # fmt: skip
    return rows, biased.view(groups, size).topk(2, dim=-1).values.sum(-1)


def counted_flops(dispatch: str, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """FLOPs torch's FlopCounterMode counts in one forward of the layer, and its output."""
    layer = moe_layer(dispatch=dispatch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = layer(x)
    return counter.get_total_flops(), out


def flop_rows(x: torch.Tensor) -> tuple[list[list], list[torch.Tensor]]:
    """[dispatch, experts run per token, FLOPs counted, per token, formula] for the sorted and
    the dense dispatch (formula: router 2 T d E + T x experts x 3 matmuls of 2 d d_expert), and
    the two outputs."""
    tokens = x.shape[0]
    router = 2 * tokens * D_MODEL * N_EXPERTS
    expert = 3 * 2 * D_MODEL * D_EXPERT
    rows, outputs = [], []
    for dispatch, experts_run in (("sorted", TOP_K), ("dense", N_EXPERTS)):
        flops, out = counted_flops(dispatch, x)
        formula = router + tokens * experts_run * expert
        rows.append([dispatch, experts_run, flops, flops // tokens, formula])
        outputs.append(out)
    return rows, outputs


def histogram_rows(runs: dict[str, BalanceRun]) -> list[list]:
    """Per expert, each run's load at its last step and a bar of one BAR per BAR_PAIRS, padded
    with SPACE to the longest bar so that right-aligned cells line up."""
    loads = [[int(run.loads[-1][e]) for run in runs.values()] for e in range(N_EXPERTS)]
    width = max(round(c / BAR_PAIRS) for row in loads for c in row)

    def bar(count: int) -> str:
        filled = round(count / BAR_PAIRS)
        return BAR * filled + SPACE * (width - filled)

    return [[e, *(f"{c:>3} {bar(c)}" for c in row)] for e, row in enumerate(loads)]


def dropped_rows(runs: dict[str, BalanceRun]) -> list[list]:
    """Per capacity factor: C, then dropped pairs and % of a fresh batch for the unbalanced and
    the aux-balanced layers (MoELayer.last_dropped)."""
    rows = []
    for factor in CAPACITY_FACTORS:
        row = [factor, expert_capacity(factor, BATCH, TOP_K, N_EXPERTS)]
        for run in (runs["none"], runs["aux"]):
            capped = with_capacity(run.layer, factor)
            with torch.no_grad():
                capped(run.batch)
            row += [capped.last_dropped, 100 * capped.last_dropped / (BATCH * TOP_K)]
        rows.append(row)
    return rows


DROPPED_COLUMNS = ["capacity factor", "C", "dropped, unbalanced", "%", "dropped, aux", "% aux"]


def balance_summary_rows(runs: dict[str, BalanceRun]) -> list[list]:
    """Per balancing method: the load's coefficient of variation and L_aux at the first and the
    last step."""
    return [[name, r.variation[0], r.variation[-1], r.aux_losses[0], r.aux_losses[-1]]
            for name, r in (("no balancing", runs["none"]), ("aux loss", runs["aux"]),
                            ("bias update", runs["bias"]))]  # fmt: skip
