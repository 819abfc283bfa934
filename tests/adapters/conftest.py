"""A tiny random HF Llama saved to disk, and our model loaded from it (the peft tests' base)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from llm_internals.models.hf import load_pretrained

VOCAB = 96


def make_hf_llama(seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
    """2 layers, d_model 64, 4 heads (2 kv heads), d_ff 128: every width a multiple of 64 so
    NF4's blocks fit; weights perturbed away from the init."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, intermediate_size=128,
                  max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=0,
                  eos_token_id=0) | overrides  # fmt: skip
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    make_hf_llama().save_pretrained(directory)
    return directory


def load_ours(directory: Path) -> torch.nn.Module:
    return load_pretrained(directory).eval()


def randomize_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    """B = 0 at init would make every comparison trivially pass: give A and B random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


IDS = torch.tensor([[1, 5, 9, 17, 33, 2, 64, 80], [3, 3, 7, 11, 95, 0, 12, 40]])
