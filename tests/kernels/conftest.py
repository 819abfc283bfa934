"""The Triton kernel module for the tests here: compiled on a GPU, else run by Triton's
interpreter on CPU tensors. tests/conftest.py sets TRITON_INTERPRET=1 on a machine without a
GPU before anything imports triton: Triton decides interpreted or compiled when a jit function
is defined, its own tl.zeros, tl.max, ... included."""

from __future__ import annotations

import importlib

import pytest
import torch

from llm_internals.kernels import triton_interpreting


@pytest.fixture(scope="module")
def kernel():
    """llm_internals.kernels.flash_attention_triton."""
    if not torch.cuda.is_available() and not triton_interpreting():
        pytest.fail("no GPU and TRITON_INTERPRET is not set: set TRITON_INTERPRET=1 before "
                    "triton is imported (tests/conftest.py does)")  # fmt: skip
    return importlib.import_module("llm_internals.kernels.flash_attention_triton")
