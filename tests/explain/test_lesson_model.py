"""The lessons' shipped trained model (explain/lesson_model.py, scripts/train_lesson_model.py):
it loads, its tokenizer round-trips text, its loss on held-out Shakespeare beats a uniform guess
by far and equals the recorded figure (recomputed live with F.cross_entropy), training is
reproducible from the seed, and the lessons' attention heatmaps are the model's own attention
(recomputed with plain torch from its weights) with clearly non-uniform rows."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_internals.data import train_val_split
from llm_internals.errors import LLMInternalsError
from llm_internals.explain import lesson_model
from llm_internals.explain.figures import FIGURES_ENV, plotted
from llm_internals.explain.lesson_model import (
    LESSON_MODEL_DIR,
    lesson_model_training,
    load_lesson_model,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_lesson_model.py"


def script_module():
    spec = importlib.util.spec_from_file_location("train_lesson_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_lesson_model", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def figures_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "figures"))


def test_loads_once_in_eval_mode_with_the_recorded_shape():
    model, tokenizer = load_lesson_model()
    assert load_lesson_model()[0] is model  # cached per process
    assert not model.training and model.config.attn_impl == "scratch"
    script = script_module()
    for field, value in script.LESSON_MODEL.items():
        assert getattr(model.config, field) == value, field
    record = lesson_model_training()
    assert tokenizer.vocab_size == model.config.vocab_size == record["vocab_size"]
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert record["seed"] == script.SEED and record["steps"] == script.STEPS
    assert (LESSON_MODEL_DIR / "model.safetensors").stat().st_size < 8 * 2**20  # a few MB


ROUND_TRIP = ["To be, or not to be: that is the question.\n", "Zwölf Boxkämpfer 😀 über den Deich"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_tokenizer_round_trips(text):
    _, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_heldout_loss_beats_uniform_and_matches_the_record(shakespeare_text):
    model, tokenizer = load_lesson_model()
    record = lesson_model_training()
    windows, length = record["heldout"]["windows"], record["heldout"]["tokens_per_window"]
    val_text = train_val_split(shakespeare_text, 0.1)[1]
    ids = tokenizer.encode_ordinary(val_text[:20_000])[: windows * (length + 1)]
    batch = torch.tensor(ids).view(windows, length + 1)
    with torch.no_grad():
        logits = model(batch[:, :-1])
    loss = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)))
    uniform = math.log(tokenizer.vocab_size)
    assert record["uniform_loss"] == pytest.approx(uniform)
    assert loss < uniform - 2.0  # far better than a uniform guess (6.93 nats)
    assert loss == pytest.approx(record["heldout"]["loss"], abs=1e-4)
    val = [r["val_loss"] for r in record["curve"] if "val_loss" in r]
    assert val[-1] < val[0] and record["val_loss"] < uniform - 2.0


def test_training_is_reproducible_from_the_seed(tmp_path):
    script = script_module()
    text = "".join(f"line {i}: to be, or not to be, that is the question.\n" for i in range(400))
    small = dict(bpe_vocab_size=300, batch_size=4, block_size=16, eval_iters=1)
    runs = [script.train(5, seed, tmp_path / name, text, **small)[0].state_dict()
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]  # fmt: skip
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # the seed matters


def test_missing_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lesson_model, "LESSON_MODEL_DIR", tmp_path)
    load_lesson_model.cache_clear()
    try:
        with pytest.raises(LLMInternalsError, match="lacks config.json, model.safetensors") as e:
            load_lesson_model()
        assert "train_lesson_model.py" in e.value.hint
    finally:
        monkeypatch.undo()
        load_lesson_model.cache_clear()


def plain_attention(ids: list[int], layer: int) -> torch.Tensor:
    """(heads, T, T) causal attention weights of `layer`, from the weights with plain torch in
    float64: per block RMSNorm, projections, RoPE (half layout), softmax(q k^T / sqrt(d)),
    W_o, residual, RMSNorm, SwiGLU, residual."""
    model, _ = load_lesson_model()
    config = model.config
    t, h, d = len(ids), config.n_heads, config.head_dim
    inv_freq = config.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)

    def rms(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps) * gain.double()

    def linear(x: torch.Tensor, module: torch.nn.Linear) -> torch.Tensor:
        return x @ module.weight.double().T

    def rope(v: torch.Tensor) -> torch.Tensor:
        return v * cos + torch.cat([-v[..., d // 2 :], v[..., : d // 2]], -1) * sin

    x = model.tok_emb.weight[torch.tensor(ids)].double()
    for index, block in enumerate(model.blocks[: layer + 1]):
        n = rms(x, block.norm1.weight)
        q, k, v = (linear(n, p).view(t, h, d).transpose(0, 1)
                   for p in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj))  # fmt: skip
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(d)
        weights = torch.softmax(scores.masked_fill(future, -math.inf), -1)
        if index == layer:
            return weights
        x = x + linear((weights @ v).transpose(0, 1).reshape(t, h * d), block.attn.o_proj)
        n = rms(x, block.norm2.weight)
        ffn = block.ffn
        x = x + linear(F.silu(linear(n, ffn.gate_proj)) * linear(n, ffn.up_proj), ffn.down_proj)
    raise AssertionError("unreachable")


def test_qkv_trained_heatmap_is_the_models_attention_and_not_uniform():
    from llm_internals.explain.lessons import qkv

    section = qkv._section_trained_model()
    figure = section.steps[0].figures[0]
    drawn = plotted(figure.path)[f"layer {qkv.TRAINED_LAYER + 1}, head {qkv.TRAINED_HEAD + 1}"]
    _, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(qkv.TRAINED_TEXT)
    expected = plain_attention(ids, qkv.TRAINED_LAYER)[qkv.TRAINED_HEAD]
    np.testing.assert_allclose(drawn, expected.numpy(), atol=1e-5)
    visible = torch.arange(1, len(ids) + 1, dtype=torch.float64)
    # A learned pattern: in the later rows the strongest key takes far more than a uniform share.
    late = slice(len(ids) // 2, None)
    assert float((expected.max(-1).values[late] * visible[late]).mean()) > 3.0
    previous = sum(int(expected[i].argmax()) == i - 1 for i in range(1, len(ids)))
    assert previous > (len(ids) - 1) / 2  # as the lesson says: mostly the token just before
    rows = section.steps[0].values["strongest key per query"].rows
    assert [r[2] for r in rows] == pytest.approx(expected.max(-1).values.tolist(), abs=1e-5)


def test_transformer_trained_heads_are_the_models_attention():
    from llm_internals.explain.lessons import transformer

    step = transformer.trained_heads_step()
    drawn = plotted(step.figures[0].path)
    _, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(transformer.TRAINED_TEXT)
    expected = plain_attention(ids, transformer.TRAINED_LAYER)
    for h in range(expected.shape[0]):
        np.testing.assert_allclose(drawn[f"head {h + 1}"], expected[h].numpy(), atol=1e-5)
        shown = step.values[
            f"trained layer {transformer.TRAINED_LAYER + 1}, head {h + 1}, last token"
        ]
        np.testing.assert_allclose(shown.double(), expected[h, -1], atol=1e-5)


def test_training_curve_figure_plots_the_recorded_curve():
    from llm_internals.explain.lessons import cross_entropy

    step = cross_entropy.training_curve_step()
    drawn = plotted(step.figures[0].path)
    curve = lesson_model_training()["curve"]
    losses = [r for r in curve if "loss" in r]
    assert drawn["training loss (one batch)"].tolist() == [r["loss"] for r in losses]
    assert drawn["x:training loss (one batch)"].tolist() == [r["step"] for r in losses]
    vals = [r["val_loss"] for r in curve if "val_loss" in r]
    assert drawn["validation (evaluation)"].tolist() == vals
    assert step.values["validation loss after training"] == lesson_model_training()["val_loss"]


def test_sampling_trained_distribution_is_the_models_next_token_softmax():
    from llm_internals.explain.lessons import sampling

    temperature, top_p = 0.8, 0.85
    section = sampling._section_trained_model(temperature, top_p)
    model, tokenizer = load_lesson_model()
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode_ordinary(sampling.TRAINED_PROMPT)]))[0, -1]
    plain = torch.softmax(logits.double(), -1)
    shaped = torch.softmax(logits.double() / temperature, -1)
    ordered, order = shaped.sort(descending=True)
    kept = order[(ordered.cumsum(0) - ordered) < top_p]  # nucleus: mass before it below p
    nucleus = torch.zeros_like(shaped)
    nucleus[kept] = shaped[kept] / shaped[kept].sum()
    rows = section.steps[0].values["most likely next tokens"].rows
    top = plain.topk(sampling.TRAINED_TOP).indices.tolist()
    assert [r[0] for r in rows] == [repr(tokenizer.decode([i])) for i in top]
    assert [r[2] for r in rows] == pytest.approx(plain[top].tolist(), abs=1e-6)
    assert [r[3] for r in rows] == pytest.approx(nucleus[top].tolist(), abs=1e-5)
    assert plain.max() > 5 / tokenizer.vocab_size  # a learned, far from uniform, distribution


def test_ffn_trained_units_are_the_models_activations():
    from llm_internals.explain import ffn_runs as ffn

    model, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(ffn.TRAINED_TEXT)
    block_ffn = model.blocks[ffn.TRAINED_LAYER].ffn
    seen = {}
    hooks = [getattr(block_ffn, name).register_forward_hook(
                 lambda _m, _i, out, name=name: seen.__setitem__(name, out[0].double()))
             for name in ("gate_proj", "up_proj")]  # fmt: skip
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    acts = F.silu(seen["gate_proj"]) * seen["up_proj"]  # (tokens, d_ff)
    rows = ffn.trained_unit_rows()
    strongest = acts.max(0).values.argsort(descending=True)[: ffn.TRAINED_UNITS].tolist()
    assert sorted({r[0] for r in rows}) == sorted(strongest)
    for unit in strongest:
        shown = [r[2] for r in rows if r[0] == unit]
        expected = acts[:, unit].sort(descending=True).values[: ffn.TRAINED_TOKENS]
        assert shown == pytest.approx(expected.tolist(), abs=1e-5)
