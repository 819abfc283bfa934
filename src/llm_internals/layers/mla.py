"""Multi-head Latent Attention (MLA), the attention of DeepSeek-V2 and V3.

Keys and values are not projected from the hidden state directly but from a small latent that is
the only thing the KV cache keeps (H heads, d_c = kv_lora_rank, d_r = qk_rope_head_dim):

    [c_kv ; k_rope] = W_DKV x                  c_kv: d_c values, k_rope: d_r values
    c_kv            = RMSNorm(c_kv)            <- cached
    k_rope          = RoPE(k_rope)             <- cached, ONE rope key shared by all H heads
    [k_nope_i ; v_i] = W_UKV_i c_kv            per head i, rebuilt from the latent
    q               = W_UQ RMSNorm(W_DQ x)     (or W_Q x when q_lora_rank is None)
    q_i             = [q_nope_i ; RoPE(q_rope_i)]
    o_i             = softmax((q_nope_i . k_nope_i + q_rope_i . k_rope) / sqrt(d_nope + d_r)) v_i

The cache holds d_c + d_r values per token per layer (512 + 64 = 576 for DeepSeek-V3) instead of
2 * H * head_dim for multi-head attention (2 * 128 * 128 = 32,768).

RoPE sits in its own "decoupled" channel because a position-dependent rotation between W_UQ and
W_UK would forbid folding them together. Without it,
q_nope_i . k_nope_i = (W_UK_i^T q_nope_i) . c_kv, so the "absorbed" mode attends in the latent
space and never expands keys and values:

    scores_i = (W_UK_i^T q_nope_i) . c_kv + q_rope_i . k_rope
    o_i      = W_UV_i (softmax(scores_i) c_kv)

The "naive" mode expands per-head keys and values as transformers' DeepseekV3Attention does; both
modes give the same output (tests: fp64 to 1e-12).

Absorbed MLA is multi-query attention over the latent. Per head i the query is
q'_i = [W_UK_i^T q_nope_i ; q_rope_i] (d_c + d_r values), the one key every head shares is the
cached latent k' = [c_kv ; k_rope], and the one value is c_kv, the key's first d_c features:

    o_i = W_UV_i softmax(q'_i . k' * scale) c_kv        (scale = 1 / sqrt(d_nope + d_r))

So the caches store k' (one "KV head" of width d_c + d_r) and no separate values, and the
library's attention (masks, the fused kernel, the paged engine's `attend`) runs unchanged with a
value narrower than the key: the layout of FlashMLA and vLLM's latent cache.

Which mode runs (`MLAConfig.attn_mode`): "auto" (default) expands keys and values when every
key is new (training, a prefill without a cache: FLOPs per query-key pair and head
2 (d_nope + d_r) + 2 d_v instead of 2 (d_c + d_r) + 2 d_c, 640 vs 2,176 for DeepSeek-V3) and
attends in the latent space when keys come from a cache (decode: the naive mode would re-expand
every cached latent through W_UKV at every step). The paged engine always attends in the latent
space. Measured in docs/mla.md: absorbed decode 1.4-3.1x naive, naive prefill 1.4x absorbed.

RoPE layout: DeepSeek's checkpoints rotate interleaved pairs (x0, x1), (x2, x3), ...
(`rope_interleave=True`, the transformers default). Like transformers we first reorder each rope
vector to (evens, odds) and then rotate halves, so cached rope keys match HF's tensor for tensor.
YaRN (`rope_scaling`) stretches the rope frequencies (layers/rope.py) and multiplies the softmax
scale by mscale^2 (`softmax_scale`), as transformers does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.attention import scaled_dot_product_attention, sdpa_attention
from llm_internals.layers.masks import causal_mask
from llm_internals.layers.norm import RMSNorm
from llm_internals.layers.rope import RotaryEmbedding, apply_rope, yarn_mscale
from llm_internals.trace import record

ATTENTION_MODES = ("auto", "naive", "absorbed")


@dataclass(frozen=True)
class MLAConfig:
    """The attention fields of a DeepseekV3Config (same names), checked when built."""

    hidden_size: int
    num_attention_heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None  # None: q = W_Q x, no query compression (DeepSeek-V2-Lite)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_interleave: bool = True
    rope_scaling: dict | None = None  # None or YaRN {"rope_type": "yarn", "factor", ...}
    attn_mode: str = "auto"  # ours, not HF's: see ATTENTION_MODES and the module docstring

    def __post_init__(self) -> None:
        if self.attn_mode not in ATTENTION_MODES:
            raise LLMInternalsError(
                f"MLA config: attn_mode = {self.attn_mode!r} is not one of "
                f"{', '.join(ATTENTION_MODES)}",
                hint="set mla.attn_mode in the model's config.json to auto, naive or absorbed",
            )
        for field in (
            "hidden_size",
            "num_attention_heads",
            "kv_lora_rank",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "v_head_dim",
        ):
            _check_positive(field, getattr(self, field))
        if self.q_lora_rank is not None:
            _check_positive("q_lora_rank", self.q_lora_rank)
        if self.qk_rope_head_dim % 2:
            raise LLMInternalsError(
                f"MLA config: qk_rope_head_dim = {self.qk_rope_head_dim} is odd; "
                "RoPE rotates pairs of features",
                hint="fix qk_rope_head_dim in the model's config.json",
            )
        for field in ("kv_lora_rank", "q_lora_rank"):
            rank = getattr(self, field)
            if rank is not None and rank > self.hidden_size:
                raise LLMInternalsError(
                    f"MLA config: {field} = {rank} is larger than hidden_size = "
                    f"{self.hidden_size}; a latent wider than the input compresses nothing",
                    hint=f"fix {field} in the model's config.json",
                )

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: the position-free part plus the rope part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def _check_positive(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LLMInternalsError(
            f"MLA config: {field} = {value!r} must be a positive integer",
            hint=f"fix {field} in the model's config.json",
        )


def kv_values_per_token(config: MLAConfig) -> int:
    """Values MLA caches per token per layer: the latent plus the shared rope key, d_c + d_r.
    Multi-head attention caches 2 * heads * head_dim (a key and a value per head)."""
    return config.kv_lora_rank + config.qk_rope_head_dim


def softmax_scale(config: MLAConfig) -> float:
    """1 / sqrt(qk_nope_head_dim + qk_rope_head_dim), times mscale^2 under YaRN with
    `mscale_all_dim` (mscale = 0.1 * mscale_all_dim * ln(factor) + 1; DeepSeek-V3: factor 40,
    mscale_all_dim 1, so 1.369^2 = 1.874), as transformers and DeepSeek's code do."""
    scale = 1.0 / math.sqrt(config.qk_head_dim)
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type", "default") != "default" and scaling.get("mscale_all_dim"):
        scale *= yarn_mscale(scaling["factor"], scaling["mscale_all_dim"]) ** 2
    return scale


def interleaved_to_halves(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x0, x2, ..., x1, x3, ...) on the last axis: the interleaved pairs
    become the (i, i + d/2) pairs that `apply_rope`'s "half" layout rotates (as HF does)."""
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


class MultiHeadLatentAttention(nn.Module):
    """Causal MLA with the parameter names of transformers' DeepseekV3Attention (no biases).

    `forward` speaks the attention-cache protocol of layers/multihead.py like MultiHeadAttention:
    it hands the cache the latent k' = [c_kv ; k_rope] as the key of one KV head (width d_c + d_r)
    and c_kv as its value (a view of the key's first d_c features), so a latent cache stores
    d_c + d_r values per token per layer and nothing else.
    """

    def __init__(self, config: MLAConfig, layer_idx: int = 0, use_sdpa: bool = False) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.mode = config.attn_mode
        self.use_sdpa = use_sdpa
        c = config
        heads = c.num_attention_heads
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(c.hidden_size, heads * c.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, eps=c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, heads * c.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, bias=False
        )
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, eps=c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(
            c.kv_lora_rank, heads * (c.qk_nope_head_dim + c.v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(heads * c.v_head_dim, c.hidden_size, bias=False)
        self.rotary = RotaryEmbedding(c.qk_rope_head_dim, c.rope_theta, c.rope_scaling, "half")
        self.scale = softmax_scale(c)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.config.rope_interleave:
            x = interleaved_to_halves(x)
        return apply_rope(x, cos, sin, layout="half")

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = True,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
    ) -> torch.Tensor:
        """x (batch, seq, hidden) -> (batch, seq, hidden), attending to the cache and to itself.

        `mask` (bool, True = attend, broadcastable to (batch, heads, seq, keys)) is the full mask
        when given; otherwise `causal` asks for a plain causal one. `rope` is (cos, sin) of shape
        (batch or 1, seq, qk_rope_head_dim) for the tokens' positions (the model passes them,
        so left padding works); by default positions continue from the cache's past length.
        `cache` follows the attention-cache protocol (layers/multihead.py).
        """
        c = self.config
        batch, seq, _ = x.shape
        if rope is None:
            past = cache.past_length() if cache is not None else 0
            rope = self.rotary(torch.arange(past, past + seq, device=x.device), dtype=x.dtype)
        cos, sin = rope

        if c.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, seq, c.num_attention_heads, c.qk_head_dim).transpose(1, 2)
        q_nope, q_rope = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        q_rope = self._rope(q_rope, cos, sin)  # (batch, heads, seq, d_r)

        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], -1)
        c_kv = self.kv_a_layernorm(c_kv)  # normalised before caching
        k_rope = self._rope(k_rope[:, None], cos, sin)  # (batch, 1, seq, d_r): one for all heads
        latent = torch.cat((c_kv[:, None], k_rope), dim=-1)  # k' = [c_kv ; k_rope]
        record("mla_latent", latent, note="(batch, 1, new tokens, d_c + d_r): what is cached")

        attend = getattr(cache, "attend", None)
        if attend is not None:  # the paged engine: it attends, always in the latent space
            query = self._absorbed_query(q_nope, q_rope)
            value = latent[..., : c.kv_lora_rank]
            out = attend(self.layer_idx, query, latent, value, scale=self.scale,
                         use_sdpa=self.use_sdpa)  # fmt: skip
            return self._output(self._from_latent(out))
        keys, values = latent, latent[..., : c.kv_lora_rank]
        if cache is not None:
            keys, values, cache_mask = cache.update(self.layer_idx, keys, values)
            if cache_mask is not None:
                mask = cache_mask
        total = keys.shape[2]
        mode = self.mode
        if mode == "auto":
            mode = "naive" if total == seq else "absorbed"
        if mask is None and causal and (seq != total or not self.use_sdpa or mode == "absorbed"):
            mask = causal_mask(seq, total, device=x.device)
        if mode == "naive":
            return self._output(self._naive(q_nope, q_rope, keys, mask, causal))
        # One shared key and value: fold the heads into the query axis, (batch, 1, heads * seq,
        # d_c + d_r) against (batch, 1, keys, d_c + d_r), one matmul, no key repeated per head.
        # torch's fused kernel wants values as wide as keys: give it the whole latent and keep the
        # first d_c output features (no padded copy of the values).
        query = self._absorbed_query(q_nope, q_rope)
        heads = c.num_attention_heads
        out = self._attention(query.flatten(1, 2)[:, None], keys,
                              keys if self.use_sdpa else values,
                              _fold_heads(mask, heads, seq, total), causal=False)  # fmt: skip
        out = out.unflatten(2, (heads, seq))[:, 0, ..., : c.kv_lora_rank]
        return self._output(self._from_latent(out))

    def _attention(self, q, k, v, mask, causal) -> torch.Tensor:
        """softmax(q k^T * scale, masked) v: the library's written-out steps or torch's kernel."""
        if self.use_sdpa:
            return sdpa_attention(q, k, v, mask=mask, scale=self.scale,
                                  is_causal=mask is None and causal)  # fmt: skip
        return scaled_dot_product_attention(q, k, v, mask=mask, scale=self.scale)

    def _naive(self, q_nope, q_rope, keys, mask, causal) -> torch.Tensor:
        """Expand per-head keys [k_nope_i ; k_rope] and values v_i from the latent, then attend."""
        c = self.config
        c_kv, k_rope = keys.split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        kv = self.kv_b_proj(c_kv[:, 0]).unflatten(-1, (c.num_attention_heads, -1)).transpose(1, 2)
        k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        k = torch.cat((k_nope, k_rope.expand(-1, c.num_attention_heads, -1, -1)), dim=-1)
        return self._attention(torch.cat((q_nope, q_rope), dim=-1), k, v, mask, causal)

    def _up_weights(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (heads, d_nope, d_c) and W_UV (heads, d_v, d_c): kv_b_proj's rows per head are
        [k_nope | v]. A plain nn.Linear's weight is read; any other linear module (a LoRA
        wrapper, a quantised or QAT layer) gives its effective weight as its output on the
        identity, so the absorbed mode sees what the naive mode's kv_b_proj(c_kv) computes."""
        c = self.config
        proj = self.kv_b_proj
        if type(proj) is nn.Linear:
            weight = proj.weight
        else:
            weight = proj(torch.eye(c.kv_lora_rank, dtype=like.dtype, device=like.device)).T
        w = weight.reshape(c.num_attention_heads, -1, c.kv_lora_rank)
        w_uk, w_uv = w.split([c.qk_nope_head_dim, c.v_head_dim], dim=1)
        return w_uk, w_uv

    def _absorbed_query(self, q_nope: torch.Tensor, q_rope: torch.Tensor) -> torch.Tensor:
        """q'_i = [W_UK_i^T q_nope_i ; q_rope_i]: (batch, heads, seq, d_c + d_r)."""
        q_latent = torch.einsum("bhsd,hdc->bhsc", q_nope, self._up_weights(q_nope)[0])
        return torch.cat((q_latent, q_rope), dim=-1)

    def _from_latent(self, out_latent: torch.Tensor) -> torch.Tensor:
        """W_UV_i applied after the attention: (batch, heads, seq, d_c) -> (..., d_v)."""
        return torch.einsum("bhsc,hdc->bhsd", out_latent, self._up_weights(out_latent)[1])

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        """(batch, heads, seq, d_v) -> merge the heads -> W_O -> (batch, seq, hidden)."""
        batch, heads, seq, d_v = out.shape
        out = self.o_proj(out.transpose(1, 2).reshape(batch, seq, heads * d_v))
        record("attention_output", out, note="heads concatenated, times W_o")
        return out


def _fold_heads(mask: torch.Tensor, heads: int, seq: int, keys: int) -> torch.Tensor:
    """A mask broadcastable to (batch, heads, seq, keys) -> (batch, 1, heads * seq, keys): the
    mask of queries whose heads were folded into the query axis (row h * seq + i is query i of
    head h)."""
    while mask.dim() < 4:
        mask = mask[None]
    batch = mask.shape[0]
    return mask.expand(batch, heads, seq, keys).reshape(batch, 1, heads * seq, keys)
