"""Tiny random HF decoder checkpoints, built live with transformers and saved to temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

DECODER_FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")
VOCAB = 128

_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}


# Scalar fields set away from their defaults (1e-5/1e-6 eps, theta 10000): a loader that ignored
# one and used the default would still pass with default-valued fixtures. An eps of 0.05 moves
# the logits of these tiny models by far more than the 1e-4 parity tolerance.
NORM_EPS = 0.05
ROPE_THETA = 321.0


def make_hf_decoder(family: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A 2-layer model with d_model 64, 4 heads (2 kv heads), vocab 128, non-default norm eps
    and RoPE theta, and weights perturbed away from the init (norm gains of exactly 1 and zero
    biases would hide mapping mistakes)."""
    torch.manual_seed(seed)
    if family == "gpt2":
        kwargs = dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                      layer_norm_epsilon=NORM_EPS, bos_token_id=0,
                      eos_token_id=0) | overrides  # fmt: skip
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    else:
        kwargs = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=96, max_position_embeddings=64, rms_norm_eps=NORM_EPS,
                      rope_theta=ROPE_THETA, bos_token_id=0,
                      eos_token_id=0) | overrides  # fmt: skip
        config_class, model_class = _CLASSES[family]
        model = model_class(config_class(**kwargs))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def save_hf(model: transformers.PreTrainedModel, directory: Path, **kwargs) -> Path:
    model.save_pretrained(directory, **kwargs)
    return directory


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory) -> dict[str, tuple[transformers.PreTrainedModel, Path]]:
    """One saved tiny checkpoint per decoder family."""
    out = {}
    for family in DECODER_FAMILIES:
        model = make_hf_decoder(family)
        out[family] = (model, save_hf(model, tmp_path_factory.mktemp(family)))
    return out


@pytest.fixture
def hf_decoder():
    """The `make_hf_decoder` factory, for tests that need their own variant."""
    return make_hf_decoder


def hf_greedy(hf, prompts, max_new_tokens, eos):
    """HF generate on a left-padded batch; per row the new tokens up to and including eos
    (the reference side of the greedy `generate` == HF `generate` tests)."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos, pad_token_id=0, use_cache=True,
        )  # fmt: skip
    return [row[: row.index(eos) + 1] if eos in row else row for row in out[:, width:].tolist()]
