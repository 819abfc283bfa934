"""The Triton kernel module for the tests here: compiled on a GPU, else run by Triton's
interpreter on CPU tensors (TRITON_INTERPRET=1, set while a test module runs: Triton decides
interpreted or compiled when a jit function is defined, its own tl.zeros, tl.max, ... included,
so the variable must be set before triton is first imported)."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
KERNEL_MODULE = "llm_internals.kernels.flash_attention_triton"


@pytest.fixture(scope="module")
def kernel():
    """llm_internals.kernels.flash_attention_triton, with TRITON_INTERPRET=1 where no GPU."""
    saved = os.environ.get("TRITON_INTERPRET")
    if not GPU:
        if "triton" in sys.modules and KERNEL_MODULE not in sys.modules:
            pytest.fail("triton was imported before these tests could set TRITON_INTERPRET=1; "
                        "run them with TRITON_INTERPRET=1 in the environment")  # fmt: skip
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield importlib.import_module(KERNEL_MODULE)
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
