"""Position-wise feed-forward networks: the per-token MLP between attention layers.

    MLP(x)    = W_down act(W_up x + b_up) + b_down                 (GPT-2, BERT, Transformer)
    SwiGLU(x) = W_down (silu(W_gate x) * (W_up x))                  (Llama, Mistral, Qwen)

Both expand each token vector to d_ff (typically 4 d_model, or about 8/3 d_model for SwiGLU so
the three matrices hold as many parameters as two 4x ones), apply a nonlinearity and project back.
The gated form lets one projection decide, per feature, how much of the other passes through.
Setting `fused = True` uses torch's single-kernel activation (the fast path).
"""

from __future__ import annotations

import torch
from torch import nn

from llm_internals.layers.activations import get_activation
from llm_internals.trace import record


class MLP(nn.Module):
    """Two linear layers with an activation in between (names follow the HF Llama style)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        get_activation(activation)  # fail early on unknown names
        self.activation_name = activation
        self.fused = False
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up_proj(x)
        record("ffn_up", hidden, note="expand to d_ff")
        hidden = get_activation(self.activation_name, self.fused)(hidden)
        record("ffn_activated", hidden, note=self.activation_name)
        out = self.down_proj(hidden)
        record("ffn_output", out, note="contract back to d_model")
        return out


class GatedMLP(nn.Module):
    """SwiGLU (activation "silu") or GeGLU ("gelu"): down(act(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", bias: bool = False):
        super().__init__()
        get_activation(activation)  # fail early on unknown names
        self.activation_name = activation
        self.fused = False
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = get_activation(self.activation_name, self.fused)(self.gate_proj(x))
        record("ffn_gate", gate, note=f"{self.activation_name}(W_gate x)")
        up = self.up_proj(x)
        record("ffn_up", up, note="expand to d_ff")
        hidden = gate * up
        record("ffn_activated", hidden, note="gate * up")
        out = self.down_proj(hidden)
        record("ffn_output", out, note="contract back to d_model")
        return out


def make_ffn(kind: str, d_model: int, d_ff: int, activation: str, bias: bool) -> nn.Module:
    """An "mlp" or a "gated" feed-forward layer (the config names both)."""
    if kind == "mlp":
        return MLP(d_model, d_ff, activation=activation, bias=bias)
    if kind == "gated":
        return GatedMLP(d_model, d_ff, activation=activation, bias=bias)
    raise ValueError(f"unknown ffn {kind!r}")  # configs are validated before this point
