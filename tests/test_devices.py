"""Device and dtype choice: auto falls back to the CPU; a missing device is a clear error."""

from __future__ import annotations

import argparse

import pytest
import torch

from llm_internals.devices import add_device_arguments, resolve_device, resolve_dtype
from llm_internals.errors import LLMInternalsError


def test_auto_is_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_missing_cuda_names_the_device_and_the_alternatives():
    with pytest.raises(LLMInternalsError, match="'cuda' asked for") as info:
        resolve_device("cuda")
    assert "cpu" in info.value.hint


def test_unknown_device_and_dtype_are_errors():
    with pytest.raises(LLMInternalsError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    with pytest.raises(LLMInternalsError, match="unknown dtype 'float13'"):
        resolve_dtype("float13", torch.device("cpu"))


def test_dtypes():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(LLMInternalsError, match="float16 on the CPU"):
        resolve_dtype("fp16", cpu)


def test_cli_arguments_have_defaults_and_help():
    parser = argparse.ArgumentParser()
    add_device_arguments(parser)
    args = parser.parse_args([])
    assert (args.device, args.dtype) == ("auto", "auto")
    assert "cuda, then mps" in parser.format_help()
