"""Compile the Triton flash-attention kernels for a GPU without one: triton.compile for a
GPUTarget runs the whole pipeline to a cubin (ptxas ships with triton), which catches what the
interpreter lets through (the compiler's type checks, layouts, shared memory). Prints each
kernel's shared memory in bytes as JSON. test_flash_attention_triton.py runs it in a fresh
process, since the tests' own triton is imported for the interpreter.

    python tests/kernels/compile_for_gpu.py --dtype bf16 --head-dim 64 --block-m 128 --block-n 64
"""

from __future__ import annotations

import argparse
import json

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from llm_internals.kernels import flash_attention_triton_kernels as kernels

SCALARS = {"scale": "fp32", "qk_scale": "fp32", "n_q": "i32", "n_k": "i32", "offset": "i32",
           "heads": "i32", "kv_heads": "i32"}  # fmt: skip
FP32_POINTERS = {"LSE", "DELTA"}


def compile_kernel(fn, args: argparse.Namespace) -> int:
    """Shared memory (bytes) of `fn` compiled for sm_<arch> with the given constants."""
    constants = dict(HEAD_DIM=args.head_dim, BLOCK_D=max(16, triton.next_power_of_2(args.head_dim)),
                     BLOCK_M=args.block_m, BLOCK_N=args.block_n, CAUSAL=args.causal,
                     PRECISION="ieee" if args.dtype == "fp32" else "tf32")  # fmt: skip
    constants = {name: value for name, value in constants.items() if name in fn.arg_names}
    signature = {
        name: "constexpr" if name in constants else SCALARS.get(name)
        or ("*fp32" if name in FP32_POINTERS else f"*{args.dtype}")
        for name in fn.arg_names
    }  # fmt: skip
    index = {(fn.arg_names.index(name),): value for name, value in constants.items()}
    source = ASTSource(fn=fn, signature=signature, constexprs=index)
    options = dict(num_warps=args.warps, num_stages=args.stages)
    compiled = triton.compile(source, target=GPUTarget("cuda", args.arch, 32), options=options)
    return compiled.metadata.shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="bf16")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-m", type=int, default=64)
    parser.add_argument("--block-n", type=int, default=64)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 90")
    args = parser.parse_args()
    names = ("forward_kernel", "delta_kernel", "dkdv_kernel", "dq_kernel")
    print(json.dumps({name: compile_kernel(getattr(kernels, name), args) for name in names}))


if __name__ == "__main__":
    main()
