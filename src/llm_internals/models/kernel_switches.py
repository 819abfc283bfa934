"""Switching a built model between written-out steps and torch's fused kernels.

Every model class (decoder, encoder, encoder-decoder) mixes this in, so lessons can run the
recorded from-scratch path and benchmarks the fast one on the same weights.
"""

from __future__ import annotations

from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.mla import MultiHeadLatentAttention
from llm_internals.layers.multihead import MultiHeadAttention


class KernelSwitches:
    """`set_attn_impl`, `set_fused_ops` and `set_mla_mode` for an nn.Module holding a ModelConfig
    as `config`."""

    def set_attn_impl(self: nn.Module, impl: str) -> None:
        """Switch every attention between "scratch" (recorded steps), "sdpa" (fused kernel) and
        "flash" (tiled, layers/flash_attention.py)."""
        self.config = self.config.replace(attn_impl=impl)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.use_sdpa = impl == "sdpa"
                module.use_flash = impl == "flash"
            elif isinstance(module, MultiHeadLatentAttention):  # no flash path: "flash" = scratch
                module.use_sdpa = impl == "sdpa"

    def set_fused_ops(self: nn.Module, fused: bool) -> None:
        """Switch norms and activations between written-out steps and torch's fused kernels."""
        self.config = self.config.replace(fused_ops=fused)
        for module in self.modules():
            if hasattr(module, "fused"):
                module.fused = fused

    def set_mla_mode(self: nn.Module, mode: str) -> None:
        """Switch every Multi-head Latent Attention between "auto", "naive" (expand keys and
        values) and "absorbed" (attend in the latent space); layers/mla.py, docs/mla.md."""
        if self.config.mla is None:
            raise LLMInternalsError("set_mla_mode: this model has no latent attention (mla)")
        self.config = self.config.replace(mla={**self.config.mla, "attn_mode": mode})  # checks
        for module in self.modules():
            if isinstance(module, MultiHeadLatentAttention):
                module.mode = mode
