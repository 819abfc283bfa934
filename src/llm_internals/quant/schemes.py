"""The registry of weight quantisation schemes by name (what `--scheme` accepts).

A scheme turns a [out, in] weight into named parts (the codes "qdata" plus scales) and back. The
parts are what a quantised checkpoint stores beside each weight: `<module>.weight` holds qdata
and `<module>.weight_<part>` the others (weight_scale, weight_zero, weight_scale2, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.quant import fp4, fp8, integer, nf4

Parts = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Scheme:
    """One named way of storing a weight. `activation_int8`: the layer also quantises its input
    per token (W8A8). `bits` is the storage per weight, scales included (for a 4096-wide row)."""

    name: str
    description: str
    quantize: Callable[[torch.Tensor, str], Parts]
    dequantize: Callable[[Parts, tuple[int, ...]], torch.Tensor]
    activation_int8: bool = False


def _nf4_quantize(weight: torch.Tensor, name: str) -> Parts:
    q = nf4.quantize_nf4(weight, double_quant=True, name=name)
    return {"qdata": q.packed, "absmax_q": q.absmax_q, "absmax_scale": q.absmax_scale,
            "absmax_mean": q.absmax_mean}  # fmt: skip


def _nf4_dequantize(parts: Parts, shape: tuple[int, ...]) -> torch.Tensor:
    q = nf4.NF4Tensor(packed=parts["qdata"], shape=shape, block=nf4.NF4_BLOCK,
                      absmax_q=parts["absmax_q"], absmax_scale=parts["absmax_scale"],
                      absmax_mean=parts["absmax_mean"])  # fmt: skip
    return nf4.dequantize_nf4(q)


def _int8(granularity: integer.Granularity) -> tuple[Callable, Callable]:
    return (
        lambda w, name: integer.quantize_symmetric(w, 8, granularity, name),
        lambda p, shape: integer.dequantize_symmetric(p, shape, granularity),
    )


def _asymmetric(bits: int, granularity: integer.Granularity) -> tuple[Callable, Callable]:
    return (
        lambda w, name: integer.quantize_asymmetric(w, bits, granularity, name),
        lambda p, shape: integer.dequantize_asymmetric(p, shape, bits, granularity),
    )


def _fp8(fmt: str, granularity: integer.Granularity) -> tuple[Callable, Callable]:
    return (
        lambda w, name: fp8.quantize_fp8(w, fmt, granularity, name),
        lambda p, shape: fp8.dequantize_fp8(p, shape, granularity),
    )


def _bf16() -> tuple[Callable, Callable]:
    return (
        lambda w, name: {"qdata": w.detach().to(torch.bfloat16)},
        lambda p, shape: p["qdata"].float(),
    )


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("bf16", "bfloat16 weights (16 bits)", *_bf16()),
        Scheme("int8", "int8 absmax (symmetric), one scale per output channel", *_int8("channel")),
        Scheme("int8-zp", "uint8 with zero point (asymmetric), per output channel",
               *_asymmetric(8, "channel")),
        Scheme("int4-g32", "4-bit with zero point, groups of 32 inputs", *_asymmetric(4, 32)),
        Scheme("int4-g128", "4-bit with zero point, groups of 128 inputs", *_asymmetric(4, 128)),
        Scheme("fp8-e4m3", "FP8 E4M3, one fp32 scale per tensor", *_fp8("e4m3", "tensor")),
        Scheme("fp8-e4m3-b128", "FP8 E4M3, one fp32 scale per 128 inputs of a row",
               *_fp8("e4m3", 128)),
        Scheme("fp8-e5m2", "FP8 E5M2, one fp32 scale per tensor", *_fp8("e5m2", "tensor")),
        Scheme("mxfp4", "OCP MXFP4: E2M1, blocks of 32, E8M0 power-of-two scale",
               fp4.quantize_mxfp4, fp4.dequantize_mxfp4),
        Scheme("nvfp4", "NVFP4: E2M1, blocks of 16, E4M3 scale and an fp32 tensor scale",
               fp4.quantize_nvfp4, fp4.dequantize_nvfp4),
        Scheme("nf4", "NF4 (QLoRA): blocks of 64, double-quantised absmax",
               _nf4_quantize, _nf4_dequantize),
        Scheme("w8a8", "int8 weights per channel and int8 activations per token",
               *_int8("channel"), activation_int8=True),
    ]
}  # fmt: skip


def get_scheme(name: str) -> Scheme:
    """The scheme called `name`; an LLMInternalsError listing the known ones otherwise."""
    if name not in SCHEMES:
        raise LLMInternalsError(
            f"unknown quantisation scheme {name!r}",
            hint=f"--scheme takes one of: {', '.join(SCHEMES)}",
        )
    return SCHEMES[name]


def fake_quantize(weight: torch.Tensor, scheme: Scheme, name: str = "weight") -> torch.Tensor:
    """dequantize(quantize(w)) in w's dtype: the values the quantised model actually uses."""
    return scheme.dequantize(scheme.quantize(weight, name), tuple(weight.shape)).to(weight.dtype)
