"""The seeded runs of the `ffn` lesson: one token vector through the library's `MLP` (GELU)
and `GatedMLP` (SwiGLU) under a recorder, the hidden units that fire most (random and in the
lessons' trained model), and the token through a Mixtral-style `MoELayer`.
"""

from __future__ import annotations

import torch

from llm_internals.explain.ffn_counts import MOE_ACTIVE, MOE_EXPERTS
from llm_internals.explain.lesson_model import load_lesson_model
from llm_internals.layers.ffn import MLP, GatedMLP
from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.trace import recording

D_MODEL = 4

D_FF = 16

SEED = 0

TOP_UNITS = 4  # hidden units shown in "what it learns"


def token() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0, 0.25, 2.0]])


def make_layers() -> tuple[MLP, GatedMLP]:
    torch.manual_seed(SEED)
    return MLP(D_MODEL, D_FF, activation="gelu"), GatedMLP(D_MODEL, D_FF, activation="silu")


def run_layers() -> tuple[MLP, GatedMLP, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    mlp, gated = make_layers()
    names = ("ffn_up", "ffn_activated", "ffn_output")
    with torch.no_grad():
        with recording() as rec:
            mlp(token())
        plain = {name: rec.get(name)[0] for name in names}
        with recording() as rec:
            gated(token())
        swiglu = {name: rec.get(name)[0] for name in (*names, "ffn_gate")}
    return mlp, gated, plain, swiglu


def unit_contributions(mlp: MLP, plain: dict[str, torch.Tensor]) -> torch.Tensor:
    """Column i of W_down times unit i's activation: (D_FF, D_MODEL); their sum plus b_down is
    the FFN's output."""
    return plain["ffn_activated"][:, None] * mlp.down_proj.weight.detach().T


def top_unit_rows(mlp: MLP, plain: dict[str, torch.Tensor]) -> list[list]:
    contributions = unit_contributions(mlp, plain)
    order = plain["ffn_activated"].abs().argsort(descending=True)[:TOP_UNITS]
    return [[int(i), float(plain["ffn_up"][i]), float(plain["ffn_activated"][i]),
             float(contributions[i].norm())] for i in order]  # fmt: skip


TRAINED_TEXT = (
    "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
    "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.\n"
)


TRAINED_LAYER, TRAINED_UNITS, TRAINED_TOKENS = 1, 3, 4  # layer 2; its 3 strongest units


def trained_unit_rows() -> list[list]:
    """For the TRAINED_UNITS units of the trained model's layer TRAINED_LAYER FFN with the
    largest activation anywhere in TRAINED_TEXT: the tokens (with the two before them) where
    each fires most, and the activation act(gate) * up there."""
    model, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(TRAINED_TEXT)
    with recording() as rec, torch.no_grad():
        model(torch.tensor([ids]))
    acts = rec.all("ffn_activated")[TRAINED_LAYER][0]  # (tokens, d_ff)
    units = acts.max(dim=0).values.argsort(descending=True)[:TRAINED_UNITS]
    rows = []
    for unit in units.tolist():
        for position in acts[:, unit].argsort(descending=True)[:TRAINED_TOKENS].tolist():
            before = tokenizer.decode(ids[max(position - 2, 0) : position])
            shown = f"{before}[{tokenizer.decode([ids[position]])}]".replace("\n", "\\n")
            rows.append([unit, shown, float(acts[position, unit])])
    return rows


def moe_example() -> tuple[MoELayer, dict[str, torch.Tensor]]:
    """The example token through the library's MoELayer: MOE_EXPERTS SwiGLU experts of width
    D_FF, Mixtral's router (top-MOE_ACTIVE logits, softmax over them)."""
    torch.manual_seed(SEED)
    layer = MoELayer(MoEConfig(D_MODEL, D_FF, MOE_EXPERTS, MOE_ACTIVE, router="topk_softmax"))
    with recording() as rec, torch.no_grad():
        out = layer(token())
    return layer, {"logits": rec.get("router_logits")[0], "weights": rec.get("router_weights")[0],
                   "indices": layer.last_routing.indices[0], "output": out[0]}  # fmt: skip
