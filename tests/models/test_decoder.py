"""DecoderLM behaviour beyond HF parity: bad input, recording, the cache protocol, gradients."""

from __future__ import annotations

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.trace import recording

LLAMA_LIKE = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         max_seq_len=16, qk_norm=True)  # fmt: skip
GPT2_LIKE = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=16,
                        position="learned", norm="layernorm", norm_eps=1e-5, ffn="mlp",
                        activation="gelu_tanh", qkv_bias=True, attn_out_bias=True,
                        mlp_bias=True, tie_embeddings=True)  # fmt: skip


def _model(config=LLAMA_LIKE, seed=0, **changes):
    torch.manual_seed(seed)
    return DecoderLM(config.replace(**changes)).eval()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.tensor([[1, 2, 50]]), "token id 50 is out of range for vocab_size=50"),
        (torch.tensor([[1, -1, 3]]), "token id -1 is out of range"),
        (
            torch.tensor([[1.0, 2.0]]),
            "token ids must be an integer tensor, got dtype torch.float32",
        ),
        (torch.tensor([1, 2, 3]), r"token ids must have shape \(batch, seq_len\), got \(3,\)"),
        (
            torch.zeros(1, 17, dtype=torch.long),
            "position 16 is outside the model's context of max_seq_len=16",
        ),
    ],
)
@pytest.mark.parametrize("config", [LLAMA_LIKE, GPT2_LIKE])
def test_bad_input_gives_clear_errors(config, ids, message):
    with pytest.raises(LLMInternalsError, match=message):
        _model(config)(ids)


def test_bad_mask_and_positions_give_clear_errors():
    model = _model()
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(
        LLMInternalsError, match=r"attention_mask must have shape .* \(2, 5\), got \(2, 4\)"
    ):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(LLMInternalsError, match="positions must be integer ids of shape"):
        model(ids, positions=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(LLMInternalsError, match="position 99 is outside"):
        model(ids, positions=torch.full((1, 5), 99))


def test_forward_records_the_steps_lessons_show():
    model = _model()
    with recording() as rec:
        model(torch.tensor([[1, 2, 3]]))
    names = set(rec.names())
    expected = {"token_embedding", "embedding", "rope_cos", "rope_sin", "q", "k", "v", "scores",
                "scaled_scores", "weights", "output", "attention_output", "normalized",
                "ffn_gate", "ffn_up", "ffn_output", "block_output", "logits"}  # fmt: skip
    assert expected <= names
    assert len(rec.all("block_output")) == 2
    assert rec.get("weights").shape == (1, 4, 3, 3)


@pytest.mark.parametrize("config", [LLAMA_LIKE, GPT2_LIKE])
def test_scratch_sdpa_and_fused_paths_agree_in_float64_with_gradients(config):
    model = _model(config).double()
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :3] = 0
    results = []
    for impl, fused in (("scratch", False), ("sdpa", False), ("sdpa", True)):
        model.set_attn_impl(impl)
        model.set_fused_ops(fused)
        model.zero_grad()
        logits = model(ids, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(logits[mask.bool()], ids[mask.bool()])
        loss.backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    logits_a, grads_a = results[0]
    for logits_b, grads_b in results[1:]:
        assert (logits_a - logits_b).abs().max() < 1e-12
        for name in grads_a:
            assert (grads_a[name] - grads_b[name]).abs().max() < 1e-10, name


class ConcatCache:
    """The simplest AttentionCache: append new keys/values along the sequence axis."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def past_length(self) -> int:
        return self.keys[0].shape[2] if 0 in self.keys else 0

    def update(self, layer_idx, k, v):
        if layer_idx in self.keys:
            k = torch.cat((self.keys[layer_idx], k), dim=2)
            v = torch.cat((self.values[layer_idx], v), dim=2)
        self.keys[layer_idx], self.values[layer_idx] = k, v
        return k, v, None


@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
@pytest.mark.parametrize("config", [LLAMA_LIKE, GPT2_LIKE])
def test_incremental_decoding_through_the_cache_protocol_matches_full_forward(config, attn_impl):
    model = _model(config, attn_impl=attn_impl)
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :2] = 0  # the second prompt is left-padded
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = ConcatCache()
        steps = [model(ids[:, :6], attention_mask=mask[:, :6], cache=cache)]
        for t in range(6, 10):
            steps.append(model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache))
    incremental = torch.cat(steps, dim=1)
    real = mask.bool()
    assert (incremental - full)[real].abs().max() < 1e-5
    assert cache.past_length() == 10


def test_a_cache_supplied_mask_replaces_the_models_mask():
    """A paged cache returns its own mask; here one that lets each token see only itself."""

    class SelfOnlyCache(ConcatCache):
        def update(self, layer_idx, k, v):
            k, v, _ = super().update(layer_idx, k, v)
            return k, v, torch.eye(k.shape[2], dtype=torch.bool)

    model = _model()
    ids = torch.tensor([[3, 7, 11, 13]])
    with torch.no_grad():
        isolated = model(ids, cache=SelfOnlyCache())
        for t in range(4):
            alone = model(ids[:, t : t + 1], positions=torch.tensor([[t]]))
            assert (isolated[0, t] - alone[0, 0]).abs().max() < 1e-5


def test_bfloat16_forward_is_finite_and_close_to_float32():
    model = _model()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(ids)
        low = model.to(torch.bfloat16)(ids)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_post_norm_and_sinusoidal_variants_run_and_train():
    model = _model(GPT2_LIKE, position="sinusoidal", norm_position="post").train()
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
