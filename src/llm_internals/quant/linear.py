"""QuantizedLinear: a linear layer whose weight is stored quantised (codes + scales, as buffers
named like the checkpoint's tensors: weight, weight_scale, weight_zero, ...), and the swap of a
model's nn.Linear layers for it.

forward, general path: y = x dequant(W)^T + b (dequantise, then one matmul).
Fast paths, where torch has a CPU kernel that reads the compact weight directly:
    int8        torch._weight_int8pack_mm(x, q [N, K] int8, scale [N]) = x (q * scale)^T
    int4-g*     torch._weight_int4pack_mm_for_cpu(x, packed, group, scale_and_zero [K/g, N, 2])
                computes with w = (q - 8) * scale + zero', q in 0..15: our (q - z) * s is the same
                with zero' = (8 - z) * s. The packed layout comes from
                torch._convert_weight_to_int4pack_for_cpu(q int32 [N, K], 1) (needs N % 16 == 0).
    bf16        F.linear in bfloat16.
The int8/int4 kernels run for bfloat16 activations only: with float32 ones torch 2.13 takes a
slow reference path (measured: 5x slower than the float32 matmul at batch 1, 40x at batch 16),
so float32 inputs use the general path, unless `kernel_activations = torch.bfloat16` (see
`use_kernel_activations`): then only the layer's input is rounded to bf16 for the kernel and
its output cast back, and the rest of the model stays in float32 (on this CPU a whole bf16
model decodes slower than fp32: its attention, norms and GELU have no fast bf16 paths).
    w8a8        x is quantised per token too: y = (round(x / s_x) q^T) * s_x * s_w.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from llm_internals.quant.integer import unpack_codes
from llm_internals.quant.schemes import Parts, Scheme, get_scheme

INT4_GROUPS = {"int4-g32": 32, "int4-g128": 128}


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W kept as `scheme` parts. `use_kernel=False` forces the general path."""

    def __init__(
        self, scheme: str, parts: Parts, shape: tuple[int, int], bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.scheme: Scheme = get_scheme(scheme)
        self.out_features, self.in_features = shape
        self.part_names = list(parts)
        for part, tensor in parts.items():
            self.register_buffer(buffer_name(part), tensor.contiguous())
        self.register_buffer("bias", bias)
        self.use_kernel = True
        self.kernel_activations: torch.dtype | None = None  # e.g. bf16: cast x for the kernels
        self._int4: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str, name: str = "weight") -> QuantizedLinear:
        parts = get_scheme(scheme).quantize(linear.weight, name)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(scheme, parts, tuple(linear.weight.shape), bias)

    def parts(self) -> Parts:
        return {part: getattr(self, buffer_name(part)) for part in self.part_names}

    def dequantized_weight(self) -> torch.Tensor:
        return self.scheme.dequantize(self.parts(), (self.out_features, self.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = self.scheme.name
        if self.scheme.activation_int8:
            return self._w8a8(x)
        if self.use_kernel and name == "bf16":
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            return F.linear(x.to(torch.bfloat16), self.weight.to(torch.bfloat16), bias).to(x.dtype)
        has_kernel = (  # torch's CPU kernels (see the module docstring); else the general path
            self.use_kernel
            and x.is_cpu
            and (name == "int8" or (name in INT4_GROUPS and self.out_features % 16 == 0))
        )
        if has_kernel and self.kernel_activations not in (None, x.dtype):
            return self.forward(x.to(self.kernel_activations)).to(x.dtype)
        if has_kernel and x.dtype == torch.bfloat16:
            flat = x.reshape(-1, self.in_features).contiguous()
            if name == "int8":
                scale = self.weight_scale.reshape(-1).to(x.dtype)
                out = torch._weight_int8pack_mm(flat, self.weight, scale)
            else:
                packed, scale_and_zero = self._int4_kernel_weights(x.dtype)
                out = torch._weight_int4pack_mm_for_cpu(
                    flat, packed, INT4_GROUPS[name], scale_and_zero
                )
            return self._finish(out.reshape(*x.shape[:-1], -1))
        return F.linear(x, self.dequantized_weight().to(x.dtype), self._bias(x.dtype))

    def _bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def _w8a8(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token int8 activations times per-channel int8 weights, rescaled after the matmul."""
        x_scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / 127
        x_codes = torch.round(x.float() / x_scale).clamp(-127, 127)
        acc = x_codes @ self.weight.float().T  # integer-valued sums (exact below 2^24)
        out = acc * x_scale * self.weight_scale.reshape(-1)
        return self._finish(out.to(x.dtype))

    def _int4_kernel_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel's packed codes and [K/g, N, 2] scales/zeros, built once (not saved)."""
        if (
            self._int4 is None
            or self._int4[1].dtype != dtype
            or self._int4[0].device != self.weight.device
        ):
            shape = (self.out_features, self.in_features)
            codes = unpack_codes(self.parts(), 4, shape).to(torch.int32)
            packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
            scale = self.weight_scale.float()
            zero = (8 - self.weight_zero.float()) * scale
            self._int4 = (packed, torch.stack([scale.T, zero.T], dim=-1).to(dtype).contiguous())
        return self._int4

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        self._int4 = None  # .to(device/dtype) invalidates the cached kernel layout
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, scheme={self.scheme.name}"


def buffer_name(part: str) -> str:
    """qdata is stored as `weight`, every other part as `weight_<part>`."""
    return "weight" if part == "qdata" else f"weight_{part}"


def quantize_model(
    model: nn.Module,
    scheme: str,
    skip: tuple[str, ...] = (),
    on_layer: Callable[[str], None] | None = None,
) -> list[str]:
    """Replace every nn.Linear of `model` (except names in `skip`) by a QuantizedLinear; returns
    the replaced module names. All layers are quantised before any is replaced, so a layer the
    scheme cannot take (its error names the tensor) leaves the model unchanged. `on_layer(name)`
    is called after each layer (a progress bar)."""
    get_scheme(scheme)
    replacements = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in skip:
            replacements[name] = QuantizedLinear.from_linear(module, scheme, f"{name}.weight")
            if on_layer is not None:
                on_layer(name)
    for name, layer in replacements.items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    return list(replacements)


def count_linear_layers(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in model.modules())


def cast_unquantized(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every parameter and bias to `dtype` except the quantised parts (codes and scales
    keep their own dtypes: `model.to(dtype)` would also cast float8 codes and fp32 scales)."""
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            if module.bias is not None:
                module.bias = module.bias.to(dtype)
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)
    return model


def quantize_output_head(model: nn.Module, scheme: str) -> None:
    """Replace `model.lm_head` (logits = h W^T, tied or not) by a QuantizedLinear of its weight;
    the input embedding keeps its own full-precision table for lookups. Used by the decode
    benchmark: at GPT-2 size the head is a third of the bytes a decode step reads. (Quantised
    checkpoints keep the head in full precision.)"""
    head = model.lm_head
    parts = get_scheme(scheme).quantize(head.weight, "lm_head.weight")
    model.lm_head = QuantizedLinear(scheme, parts, tuple(head.weight.shape), None)


def use_kernel_activations(model: nn.Module, dtype: torch.dtype | None = torch.bfloat16) -> None:
    """Let every QuantizedLinear round its input to `dtype` to run torch's int8/int4 kernels
    (None: only inputs that already have a kernel dtype do)."""
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            module.kernel_activations = dtype
