"""Optional accelerator kernels (Triton), each beside the PyTorch reference it must agree with.

Nothing here imports triton: `unsupported_reason` says whether the Triton flash-attention
kernel (kernels/flash_attention_triton.py, which does import it) can run given tensors, so the
PyTorch path can decide without touching triton on a CPU. Install it with
`pip install -e .[triton]` (Linux; the kernels need an NVIDIA or AMD GPU, or Triton's
interpreter: TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib.util
import os

import torch

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when TRITON_INTERPRET is set: kernels then run on CPU tensors, in numpy (slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def unsupported_reason(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> str | None:
    """None when triton_flash_attention can run these inputs, else why not (one line).

    Shapes are assumed already checked (layers.flash_attention.check_inputs); this lists only
    what the kernel itself leaves out.
    """
    if q.numel() == 0 or k.numel() == 0:
        return "empty q or k (no rows to tile)"
    if mask is not None:
        return "a padding mask (the kernel does causal masking only)"
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if v.shape[-1] != q.shape[-1] or q.shape[-1] > MAX_HEAD_DIM:
        return f"head dims q {q.shape[-1]}, v {v.shape[-1]} (need equal and <= {MAX_HEAD_DIM})"
    if q.device.type != "cuda" and not triton_interpreting():
        return f"tensors on {q.device} (need CUDA, or TRITON_INTERPRET=1 for the interpreter)"
    if not triton_installed():
        return "triton is not installed (pip install -e .[triton])"
    return None
