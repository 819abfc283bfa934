"""Our MoE layer against the live HF blocks (Mixtral, Qwen2/3-MoE, DeepSeek-V3), weights copied in.

HF's routers compute in fp32 even inside an fp64 model (Mixtral/Qwen2 softmax in float, DeepSeek
casts x and W_g to float32), so fp64 parity is checked on what is fp64 there: the same expert ids
from our fp64 router, and our experts + combine fed HF's routing equal to HF's experts at 1e-12.
The whole block is compared in fp32 at 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DeepseekV3Config, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

from llm_internals.layers.moe import MoEConfig, MoELayer
from llm_internals.layers.moe_dispatch import DISPATCH_MODES, DISPATCHERS

D_MODEL, D_EXPERT = 24, 10


def mixtral():
    hf_config = MixtralConfig(
        hidden_size=D_MODEL, intermediate_size=D_EXPERT, num_local_experts=6, num_experts_per_tok=2
    )
    ours = MoEConfig(D_MODEL, D_EXPERT, n_experts=6, top_k=2, router="topk_softmax")
    return MixtralSparseMoeBlock(hf_config), ours


def qwen2(norm_topk_prob: bool):
    def build():
        hf_config = Qwen2MoeConfig(
            hidden_size=D_MODEL,
            moe_intermediate_size=D_EXPERT,
            shared_expert_intermediate_size=14,
            num_experts=7,
            num_experts_per_tok=3,
            norm_topk_prob=norm_topk_prob,
        )
        ours = MoEConfig(
            D_MODEL,
            D_EXPERT,
            n_experts=7,
            top_k=3,
            router="softmax_topk",
            norm_topk_prob=norm_topk_prob,
            d_shared=14,
            shared_expert_gate=True,
        )
        return Qwen2MoeSparseMoeBlock(hf_config), ours

    return build


def qwen3():
    hf_config = Qwen3MoeConfig(
        hidden_size=D_MODEL,
        moe_intermediate_size=D_EXPERT,
        num_experts=9,
        num_experts_per_tok=4,
        norm_topk_prob=True,
    )
    ours = MoEConfig(D_MODEL, D_EXPERT, n_experts=9, top_k=4, router="softmax_topk")
    return Qwen3MoeSparseMoeBlock(hf_config), ours


def deepseek_v3():
    hf_config = DeepseekV3Config(
        hidden_size=D_MODEL,
        moe_intermediate_size=D_EXPERT,
        n_routed_experts=12,
        n_shared_experts=2,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
    )
    ours = MoEConfig(
        D_MODEL,
        D_EXPERT,
        n_experts=12,
        top_k=3,
        router="sigmoid_grouped",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        n_shared_experts=2,
    )
    return DeepseekV3MoE(hf_config), ours


BUILDERS = {
    "mixtral": mixtral,
    "qwen2_norm": qwen2(True),
    "qwen2_plain": qwen2(False),
    "qwen3": qwen3,
    "deepseek_v3": deepseek_v3,
}


def copy_mlp(ours, hf_mlp) -> None:
    for name in ("gate_proj", "up_proj", "down_proj"):
        getattr(ours, name).weight.copy_(getattr(hf_mlp, name).weight)


@torch.no_grad()
def build_pair(name: str, dtype: torch.dtype, dispatch: str = "sorted"):
    """An HF block with random weights (and a random selection bias) and ours holding the same."""
    torch.manual_seed(sum(map(ord, name)))
    hf, config = BUILDERS[name]()
    config.dispatch = dispatch
    for parameter in hf.parameters():
        parameter.normal_(0, 0.3)
    if name == "deepseek_v3":
        hf.gate.e_score_correction_bias.normal_(0, 0.3)
    hf = hf.to(dtype)
    ours = MoELayer(config).to(dtype)
    ours.router.weight.copy_(hf.gate.weight)
    if name == "deepseek_v3":
        ours.router.e_score_correction_bias.copy_(hf.gate.e_score_correction_bias)
    for e, expert in enumerate(ours.experts):
        gate, up = hf.experts.gate_up_proj[e].chunk(2, dim=0)
        expert.gate_proj.weight.copy_(gate)
        expert.up_proj.weight.copy_(up)
        expert.down_proj.weight.copy_(hf.experts.down_proj[e])
    if name.startswith("qwen2"):
        copy_mlp(ours.shared, hf.shared_expert)
        ours.shared_gate.weight.copy_(hf.shared_expert_gate.weight)
    if name == "deepseek_v3":
        copy_mlp(ours.shared, hf.shared_experts)
    return hf.eval(), ours.eval()


@pytest.mark.parametrize("dispatch", DISPATCH_MODES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_block_matches_hf_fp32(name, dispatch):
    hf, ours = build_pair(name, torch.float32, dispatch)
    x = torch.randn(3, 5, D_MODEL)
    with torch.no_grad():
        expected = hf(x)
        got = ours(x)
        _, _, hf_indices = hf.gate(x.reshape(-1, D_MODEL))
    assert torch.equal(ours.last_routing.indices.sort(-1).values, hf_indices.sort(-1).values)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(BUILDERS))
def test_selection_and_experts_match_hf_fp64(name):
    hf, ours = build_pair(name, torch.float64)
    x = torch.randn(17, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, hf_weights, hf_indices = hf.gate(x)
        ours(x)
        assert torch.equal(ours.last_routing.indices.sort(-1).values, hf_indices.sort(-1).values)
        expected = hf.experts(x, hf_indices, hf_weights)
        for dispatch in DISPATCH_MODES:
            got = DISPATCHERS[dispatch](x, ours.experts, hf_indices, hf_weights.to(x.dtype))
            assert (got - expected).abs().max() < 1e-12, dispatch


def test_deepseek_bias_changes_selection_not_weights():
    """A large bias on one expert makes every token pick it; its weight is still the unbiased
    sigmoid score, exactly as in HF."""
    hf, ours = build_pair("deepseek_v3", torch.float32)
    x = torch.randn(9, D_MODEL)
    with torch.no_grad():
        for module in (hf.gate, ours.router):
            module.e_score_correction_bias.zero_()
            module.e_score_correction_bias[5] = 10.0
        _, hf_weights, hf_indices = hf.gate(x)
        routing = ours.router(x)
    assert (routing.indices == 5).any(dim=-1).all()
    order_ours, order_hf = routing.indices.argsort(-1), hf_indices.argsort(-1)
    assert torch.equal(routing.indices.gather(1, order_ours), hf_indices.gather(1, order_hf))
    expected = hf_weights.gather(1, order_hf)
    assert (routing.weights.gather(1, order_ours) - expected).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["mixtral", "qwen2_plain", "qwen3"])
def test_bf16_routing_matches_hf(name):
    """In bf16 the scores are taken in fp32 as HF does: same choices and weights (HF's Qwen
    routers round the weights back to bf16, Mixtral's keep fp32; the dispatch rounds ours)."""
    hf, ours = build_pair(name, torch.bfloat16)
    x = torch.randn(64, D_MODEL, dtype=torch.bfloat16)
    with torch.no_grad():
        _, hf_weights, hf_indices = hf.gate(x)
        routing = ours.router(x)
    assert torch.equal(routing.indices, hf_indices)
    assert (routing.weights.to(hf_weights.dtype) - hf_weights).abs().max() < 1e-6
