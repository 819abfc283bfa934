"""Norms, activations and feed-forward layers against torch.nn / torch.nn.functional and HF."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.activations import gelu, gelu_tanh, get_activation, relu, silu
from llm_internals.layers.ffn import MLP, GatedMLP
from llm_internals.layers.norm import LayerNorm, RMSNorm
from llm_internals.trace import recording

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 64), (1, 1, 7)])
def test_layernorm_matches_torch(dtype, shape):
    torch.manual_seed(0)
    dim = shape[-1]
    ours = LayerNorm(dim, eps=1e-5).to(dtype)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    x = torch.randn(*shape, dtype=dtype) * 3 + 1
    expected = F.layer_norm(x, (dim,), ours.weight, ours.bias, eps=1e-5)
    assert (ours(x) - expected).abs().max() < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_matches_torch_and_hf(dtype):
    torch.manual_seed(1)
    ours = RMSNorm(48, eps=1e-6).to(dtype)
    hf = LlamaRMSNorm(48, eps=1e-6).to(dtype)
    with torch.no_grad():
        ours.weight.normal_()
        hf.weight.copy_(ours.weight)
    x = torch.randn(4, 9, 48, dtype=dtype)
    assert (ours(x) - F.rms_norm(x, (48,), ours.weight, eps=1e-6)).abs().max() < TOL[dtype]
    if dtype == torch.float32:  # HF computes in float32 even for float64 input
        assert (ours(x) - hf(x)).abs().max() < TOL[dtype]


def test_rmsnorm_bfloat16_computes_statistics_in_float32_like_hf():
    torch.manual_seed(2)
    ours, hf = RMSNorm(256).bfloat16(), LlamaRMSNorm(256).bfloat16()
    x = (torch.randn(3, 256) * 10).bfloat16()
    assert torch.equal(ours(x), hf(x))


def test_norms_record_their_steps():
    with recording() as rec:
        RMSNorm(4)(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert torch.allclose(rec.get("norm_mean_square"), torch.tensor([[7.5]]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_match_torch(dtype):
    x = torch.linspace(-8, 8, 1001, dtype=dtype)
    assert (relu(x) - F.relu(x)).abs().max() < TOL[dtype]
    assert (gelu(x) - F.gelu(x)).abs().max() < TOL[dtype]
    assert (gelu_tanh(x) - F.gelu(x, approximate="tanh")).abs().max() < TOL[dtype]
    assert (silu(x) - F.silu(x)).abs().max() < TOL[dtype]


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh", "silu"])
def test_fused_activations_equal_written_out_ones(name):
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    assert (get_activation(name, fused=True)(x) - get_activation(name)(x)).abs().max() < 1e-12


@pytest.mark.parametrize("norm_class", [LayerNorm, RMSNorm])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fused_norms_equal_written_out_ones(norm_class, dtype):
    torch.manual_seed(5)
    norm = norm_class(32).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(4, 32) * 5).to(dtype)
    written_out = norm(x)
    norm.fused = True
    tol = 1e-12 if dtype == torch.float64 else 2e-2
    assert (norm(x).double() - written_out.double()).abs().max() < tol


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(LLMInternalsError, match="unknown activation 'swishy'"):
        get_activation("swishy")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("activation", "module"),
    [("relu", nn.ReLU()), ("gelu", nn.GELU()), ("gelu_tanh", nn.GELU(approximate="tanh"))],
)
def test_mlp_matches_torch_sequential(dtype, activation, module):
    torch.manual_seed(3)
    ours = MLP(16, 64, activation=activation).to(dtype)
    ref = nn.Sequential(nn.Linear(16, 64), module, nn.Linear(64, 16)).to(dtype)
    ref.load_state_dict(
        {
            "0.weight": ours.up_proj.weight,
            "0.bias": ours.up_proj.bias,
            "2.weight": ours.down_proj.weight,
            "2.bias": ours.down_proj.bias,
        }  # fmt: skip
    )
    x = torch.randn(2, 5, 16, dtype=dtype)
    assert (ours(x) - ref(x)).abs().max() < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_matches_hf_llama_mlp(dtype):
    torch.manual_seed(4)
    ours = GatedMLP(24, 40).to(dtype)
    hf = LlamaMLP(LlamaConfig(hidden_size=24, intermediate_size=40, num_attention_heads=4)).to(
        dtype
    )
    hf.load_state_dict(ours.state_dict())  # same names: gate_proj, up_proj, down_proj
    x = torch.randn(3, 7, 24, dtype=dtype)
    assert (ours(x) - hf(x)).abs().max() < TOL[dtype]
