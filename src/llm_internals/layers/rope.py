"""Rotary position embedding (RoPE, Su et al. 2021), as used by Llama, Mistral and Qwen.

Each pair of features (a, b) of a query or key at position m is rotated by the angle m * w_i:

    (a, b) -> (a cos(m w_i) - b sin(m w_i),  a sin(m w_i) + b cos(m w_i)),
    w_i = theta^(-2i / head_dim),  i = 0 .. head_dim/2 - 1.

A rotation by m w applied to q and by n w applied to k leaves q . k depending only on (m - n) w:
attention scores see relative positions although each vector only knows its absolute one.

Two layouts pair features differently. Meta's original code rotates neighbours (x[2i], x[2i+1])
("interleaved"); HF checkpoints rotate x[i] with x[i + head_dim/2] ("half", via rotate_half) after
permuting the rows of W_q and W_k at conversion time. `interleaved_to_half` is that permutation.

Llama 3 stretches the low frequencies for long contexts ("llama3" scaling): wavelengths longer than
original_max / low_freq_factor are divided by `factor`, shorter than original_max / high_freq_factor
are kept, and the band between is interpolated smoothly. YaRN ("yarn", DeepSeek-V3) does the same
with a ramp over frequency indices set by how often each frequency turns within the original
context (beta_fast, beta_slow), and scales cos/sin by an attention factor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llm_internals.trace import record


def rope_frequencies(
    head_dim: int, theta: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The head_dim/2 angular frequencies w_i = theta^(-2i/head_dim), in float32, on `device`
    (None: torch's default device)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponents)


def llama3_scaled_frequencies(
    inv_freq: torch.Tensor,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> torch.Tensor:
    """Llama 3.1's frequency scaling: slow long-wavelength rotations by `factor`, keep fast ones."""
    low_freq_wavelen = original_max_position_embeddings / low_freq_factor
    high_freq_wavelen = original_max_position_embeddings / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    # Between the two wavelengths blend the scaled and unscaled frequency linearly in 1/wavelength.
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, blended, scaled)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1 (1 when not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_scaled_frequencies(
    head_dim: int,
    theta: float,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """YaRN (Peng et al. 2023; DeepSeek-V3's long context) as transformers computes it.

    Frequency i turns r_i = L / (2 pi / w_i) times over the original context L. Frequencies that
    turn more than beta_fast times are kept (extrapolated), fewer than beta_slow times divided by
    `factor` (interpolated), with a linear ramp in i between the two:
        w'_i = w_i / factor * ramp_i + w_i * (1 - ramp_i)
    The boundary indices solve r_i = beta for i (rounded outward when `truncate`).
    """

    def index_for(rotations: float) -> float:
        wavelengths = original_max_position_embeddings / (rotations * 2 * math.pi)
        return head_dim * math.log(wavelengths) / (2 * math.log(theta))

    low, high = index_for(beta_fast), index_for(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # no division by zero when the ramp is one step
    steps = torch.arange(head_dim // 2, dtype=torch.float32, device=device)
    ramp = ((steps - low) / (high - low)).clamp(0, 1)  # 0: keep, 1: interpolate
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    periods = theta**exponents
    return (1.0 / (factor * periods)) * ramp + (1.0 / periods) * (1 - ramp)


def rope_attention_factor(scaling: dict | None) -> float:
    """The factor cos and sin are multiplied by: 1, or YaRN's attention_factor (default
    mscale(factor) / mscale(factor, mscale_all_dim) when both mscales are given, else
    mscale(factor)), applied to q and k alike, so to the attention logits squared."""
    if scaling is None or scaling.get("rope_type") != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor, mscale, all_dim = (scaling["factor"], scaling.get("mscale"),
                               scaling.get("mscale_all_dim"))  # fmt: skip
    if mscale and all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim)
    return yarn_mscale(factor)


class RotaryEmbedding(nn.Module):
    """Turns position ids into the cos/sin tables that `apply_rope` multiplies q and k with."""

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        scaling: dict | None = None,
        layout: str = "half",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("half", "interleaved"):
            raise ValueError(f"unknown RoPE layout {layout!r}")
        self.layout = layout
        inv_freq = rope_frequencies(head_dim, theta, device)
        rope_type = "default" if scaling is None else scaling.get("rope_type", "default")
        self.attention_factor = rope_attention_factor(scaling)
        if rope_type == "yarn":
            inv_freq = yarn_scaled_frequencies(
                head_dim,
                theta,
                factor=scaling["factor"],
                original_max_position_embeddings=scaling["original_max_position_embeddings"],
                beta_fast=scaling.get("beta_fast") or 32.0,
                beta_slow=scaling.get("beta_slow") or 1.0,
                truncate=scaling.get("truncate", True),
                device=device,
            )
        if rope_type == "llama3":
            inv_freq = llama3_scaled_frequencies(
                inv_freq,
                factor=scaling["factor"],
                low_freq_factor=scaling["low_freq_factor"],
                high_freq_factor=scaling["high_freq_factor"],
                original_max_position_embeddings=scaling["original_max_position_embeddings"],
            )
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)

    def _apply(self, fn, recurse: bool = True):
        """`model.to(device)` moves the frequencies; `model.to(torch.bfloat16)` must not round
        them: w_i in bfloat16 keeps 8 significant bits, so the angle m * w_i at position
        m = 1000 would be off by up to ~4 radians. Whatever `fn` does, they stay float32."""
        exact = self.inv_freq.float()
        super()._apply(fn, recurse)
        moved = self.inv_freq  # meta (no values to keep) moves as fn says, cast back to float32
        self.inv_freq = moved.float() if exact.is_meta else exact.to(moved.device)
        return self

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape (*positions.shape, head_dim) for integer `positions`.

        Angles are computed in float32 (as HF does, so fp32 results match bit for bit), or in
        float64 when float64 output is asked for.
        """
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        angles = positions[..., None].to(compute) * self.inv_freq.to(compute)  # (..., head_dim/2)
        if self.layout == "half":
            angles = torch.cat((angles, angles), dim=-1)
        else:
            angles = torch.repeat_interleave(angles, 2, dim=-1)
        cos, sin = angles.cos(), angles.sin()
        if self.attention_factor != 1.0:  # YaRN's temperature, on q and k alike
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        cos, sin = cos.to(dtype), sin.to(dtype)
        record("rope_cos", cos, note="cos(position * w_i)")
        record("rope_sin", sin, note="sin(position * w_i)")
        return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): rotate_half for the interleaved layout."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half"
) -> torch.Tensor:
    """Rotate `x` of shape (*batch, heads, seq, head_dim) or (*batch, seq, head_dim) by cos/sin.

    cos/sin come from `RotaryEmbedding` and have x's shape without the heads axis (*batch, seq,
    head_dim), or any shape that broadcasts to x (e.g. (seq, head_dim) for every batch row).
    Any number of leading batch dimensions works. x * cos + rotate(x) * sin is the 2D rotation
    written for all pairs at once.
    """
    if x.dim() >= 3 and cos.dim() == x.dim() - 1:
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # one table for every head
    rotated = rotate_half(x) if layout == "half" else rotate_pairs(x)
    return x * cos + rotated * sin


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the output rows of a Meta-layout W_q / W_k so it works with the "half" layout.

    Within each head the row order becomes (0, 2, 4, ..., 1, 3, 5, ...): the first features of all
    pairs, then the second ones. The same permutation works on a bias vector.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    per_head = weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
    return per_head.transpose(1, 2).reshape(rows, *weight.shape[1:])


def half_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `interleaved_to_half`."""
    rows = weight.shape[0]
    head_dim = rows // n_heads
    per_head = weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
    return per_head.transpose(1, 2).reshape(rows, *weight.shape[1:])
