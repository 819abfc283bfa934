"""Device and dtype choice, and the device plumbing of the inference paths.

How the plumbing is checked without a GPU: inside `with torch.device("meta")`, every tensor
factory call that does not name its device makes a meta tensor (no data), which fails as soon as
it meets the model's CPU tensors or is read back. So a generate or engine run that gives the
same tokens inside that block as outside it creates every tensor on a device it chose on
purpose: the model's, the input's, or the CPU for host-side bookkeeping. tests/test_cuda.py
checks on a GPU that the choice is the right one (same tokens and logits as on the CPU).
"""

from __future__ import annotations

import argparse

import pytest
import torch

from llm_internals.cli import main
from llm_internals.devices import (
    add_device_arguments,
    device_and_dtype,
    resolve_device,
    resolve_dtype,
)
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.paged import LLM
from llm_internals.inference.paged.paged_cache import PagedKVCache
from llm_internals.inference.params import SamplingParams
from llm_internals.layers.masks import causal_mask
from llm_internals.layers.rope import RotaryEmbedding
from llm_internals.models import DecoderLM, ModelConfig, save_checkpoint
from llm_internals.models.seq2seq import Seq2SeqLM
from llm_internals.tokenizer import train_bpe

SAMPLED = dict(temperature=0.9, top_k=8, top_p=0.9, min_p=0.02, seed=3, repetition_penalty=1.3,
               frequency_penalty=0.4)  # fmt: skip
PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 10], [4, 5]]
LLAMA3_SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=16)  # fmt: skip


def tiny_decoder(**overrides) -> DecoderLM:
    torch.manual_seed(0)
    config = dict(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    model = DecoderLM(ModelConfig(**{**config, **overrides}))
    with torch.no_grad():  # weights off their tiny init, so greedy outputs vary
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return model.eval()


def _cuda_missing(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --- choosing a device and a dtype -------------------------------------------------------------


def test_auto_is_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_falls_back_to_the_cpu_and_cuda_is_an_error_naming_what_is_here(monkeypatch):
    _cuda_missing(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(LLMInternalsError) as info:
            resolve_device(name)
        assert f"--device {name!r}: " in info.value.message
        assert "(available here: cpu)" in info.value.message
        assert "\n" not in info.value.message and "--device auto" in info.value.hint


def test_unknown_device_and_dtype_are_errors():
    with pytest.raises(LLMInternalsError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    with pytest.raises(LLMInternalsError, match="unknown dtype 'float13'") as info:
        resolve_dtype("float13", torch.device("cpu"))
    assert "--dtype" in info.value.hint


def test_dtypes():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype(torch.bfloat16, cpu) is torch.bfloat16
    with pytest.raises(LLMInternalsError, match="float16 on the CPU"):
        resolve_dtype("fp16", cpu)


def test_cli_arguments_have_defaults_and_help():
    parser = argparse.ArgumentParser()
    add_device_arguments(parser)
    args = parser.parse_args([])
    assert (args.device, args.dtype) == ("auto", "auto")
    assert "cuda, then mps" in parser.format_help()
    assert device_and_dtype(parser.parse_args(["--device", "cpu", "--dtype", "bf16"])) == (
        torch.device("cpu"),
        torch.bfloat16,
    )
    without_dtype = argparse.ArgumentParser()
    add_device_arguments(without_dtype, dtype=False)
    assert device_and_dtype(without_dtype.parse_args(["--device", "cpu"]))[1] is torch.float32


# --- every tensor the inference paths create names its device -------------------------------

DECODERS = {
    "llama-style": {},
    "gpt2-style": dict(position="learned", norm="layernorm", ffn="mlp", activation="gelu"),
    "sliding window, sdpa": dict(sliding_window=4, attn_impl="sdpa"),
    "llama3 rope": dict(rope_scaling=LLAMA3_SCALING),
    "sinusoidal": dict(position="sinusoidal"),
}


@pytest.mark.parametrize("overrides", DECODERS.values(), ids=DECODERS.keys())
@pytest.mark.parametrize("sampling", [{}, SAMPLED, dict(use_cache=False, temperature=1.0)],
                         ids=["greedy", "sampled+penalties", "no cache"])  # fmt: skip
def test_generate_creates_no_tensor_on_the_default_device(overrides, sampling):
    model = tiny_decoder(**overrides)
    torch.manual_seed(1)
    expected = [r.token_ids for r in generate(model, None, PROMPTS, max_new_tokens=6, **sampling)]
    torch.manual_seed(1)
    with torch.device("meta"):
        got = [r.token_ids for r in generate(model, None, PROMPTS, max_new_tokens=6, **sampling)]
    assert got == expected
    assert len({tuple(t) for t in expected}) > 1  # the rows differ: the check sees real tokens


@pytest.mark.parametrize("sampling", [{}, dict(temperature=0.9, seed=2), dict(use_cache=False)],
                         ids=["greedy", "sampled", "no cache"])  # fmt: skip
def test_seq2seq_generate_creates_no_tensor_on_the_default_device(sampling):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                         position="sinusoidal", norm="layernorm", ffn="mlp", activation="gelu",
                         norm_position="post", family="marian",
                         extra=dict(decoder_layers=1, pad_token_id=39, decoder_start_token_id=39,
                                    eos_token_id=3))  # fmt: skip
    model = Seq2SeqLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    sources = [[5, 6, 7, 8], [9, 10]]
    expected = generate(model, None, sources, max_new_tokens=5, eos_token_id=None, **sampling)
    with torch.device("meta"):
        got = generate(model, None, sources, max_new_tokens=5, eos_token_id=None, **sampling)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]


@pytest.mark.parametrize("overrides", DECODERS.values(), ids=DECODERS.keys())
@pytest.mark.parametrize("params", [SamplingParams(temperature=0, max_tokens=6),
                                    SamplingParams(temperature=0.9, top_k=5, seed=4, max_tokens=6,
                                                   presence_penalty=0.3, n=2)],
                         ids=["greedy", "sampled n=2"])  # fmt: skip
def test_paged_engine_creates_no_tensor_on_the_default_device(overrides, params):
    """Shared prefixes (prefix cache, copy-on-write for n=2), chunked prefills (a budget of 8
    tokens per step) and decode groups all run."""
    model = tiny_decoder(**overrides)

    def run() -> list[list[int]]:
        llm = LLM(model, None, block_size=4, num_blocks=40, max_num_seqs=4,
                  max_num_batched_tokens=8)  # fmt: skip
        return [out.token_ids for out in llm.generate(PROMPTS, params)]

    expected = run()
    with torch.device("meta"):
        assert run() == expected


def test_caches_pools_and_masks_are_made_on_the_models_device():
    model = tiny_decoder().to(device="meta", dtype=torch.bfloat16)
    cache = ContiguousKVCache.for_model(model, batch=2, max_len=16)
    pool = PagedKVCache.for_model(model, block_size=4, num_blocks=8)
    for tensor in (*cache.keys, *cache.values, *pool.keys, *pool.values):
        assert (tensor.device.type, tensor.dtype) == ("meta", torch.bfloat16)
    on_request = ContiguousKVCache.for_model(tiny_decoder(), 2, 16, device="meta")
    assert {t.device.type for t in (*on_request.keys, *on_request.values)} == {"meta"}
    assert causal_mask(3, 5, sliding_window=2, device="meta").device.type == "meta"
    rope = RotaryEmbedding(16, scaling=LLAMA3_SCALING, device="meta")
    cos, sin = rope(torch.arange(4, device="meta")[None])
    assert {rope.inv_freq.device.type, cos.device.type, sin.device.type} == {"meta"}


def test_rope_frequencies_stay_float32_in_a_bfloat16_model():
    """model.to(bfloat16) casts every floating buffer; rounded to bfloat16 the frequencies would
    put the angle at position 2000 off by radians. Reference: float64 from the formula."""
    model = tiny_decoder(d_model=64, n_heads=2, n_kv_heads=2).to(torch.bfloat16)
    assert model.rope.inv_freq.dtype == torch.float32
    head_dim = model.config.head_dim
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    position = 2000
    angles = position * model.config.rope_theta**-exponent
    cos, sin = model.rope(torch.tensor([[position]]), dtype=torch.float32)
    assert (cos[0, 0, : head_dim // 2].double() - angles.cos()).abs().max() < 1e-3
    assert (sin[0, 0, : head_dim // 2].double() - angles.sin()).abs().max() < 1e-3


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 6
    tokenizer = train_bpe(text, 280)
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2,
                                  n_heads=4, n_kv_heads=2, max_seq_len=64))  # fmt: skip
    path = tmp_path_factory.mktemp("devices") / "model"
    save_checkpoint(model, path)
    tokenizer.save(path / "tokenizer.json")
    return path, model.eval(), tokenizer


@pytest.mark.parametrize("flags", [["--device", "cpu"], ["--device", "auto"],
                                   ["--device", "cpu", "--dtype", "bf16"]])  # fmt: skip
def test_generate_command_runs_where_asked(model_dir, flags, capsys, monkeypatch):
    _cuda_missing(monkeypatch)  # auto = cpu, so the output is comparable
    path, model, tokenizer = model_dir
    assert main(["generate", "--model", str(path), "--prompt", "whether",
                 "--max-new-tokens", "8", "--temperature", "0", *flags]) == 0  # fmt: skip
    out = capsys.readouterr().out
    dtype = torch.bfloat16 if "bf16" in flags else torch.float32
    expected = generate(model.to(dtype), tokenizer, "whether", max_new_tokens=8, eos_token_id=None)
    model.float()
    assert f"whether{expected.text}" in out
    assert f"cpu, {str(dtype).removeprefix('torch.')})" in out


@pytest.mark.parametrize("command", ["generate", "serve", "tour"])
def test_commands_name_the_available_devices_when_cuda_is_missing(
    command, model_dir, tmp_path, capsys, monkeypatch
):
    _cuda_missing(monkeypatch)
    argv = {
        "generate": ["generate", "--model", str(model_dir[0]), "--prompt", "to"],
        "serve": ["serve", "--model", str(tmp_path / "no-such-model")],  # device checked first
        "tour": ["tour", "--workdir", str(tmp_path / "tour")],
    }[command]
    assert main([*argv, "--device", "cuda"]) == 2
    out = capsys.readouterr().out
    assert out.startswith(
        "error: --device 'cuda': this torch sees no CUDA GPU (available here: cpu)"
    )
    assert not (tmp_path / "tour").exists()  # nothing ran before the check


def test_tour_stages_run_in_the_tours_dtype_and_say_where(tmp_path):
    from rich.console import Console

    from llm_internals.tokenizer.char import CharTokenizer
    from llm_internals.tour import TourContext
    from llm_internals.tour import generation as stage

    text = "ROMEO.\nBut soft, what light through yonder window breaks?\n" * 10
    tokenizer = CharTokenizer.train(text)
    model = tiny_decoder(vocab_size=tokenizer.vocab_size, max_seq_len=24)
    console = Console(record=True, width=300)
    ctx = TourContext(console=console, workdir=tmp_path, corpus_source="test",
                      dtype=torch.bfloat16)  # fmt: skip
    ctx.artifacts.update(model=model, tokenizer=tokenizer)
    stage.run(ctx)
    assert next(model.parameters()).dtype == torch.bfloat16  # placed by the stage
    assert "on cpu, bfloat16 (one thread)" in console.export_text()
    assert (ctx.verdict(True), ctx.verdict(False)) == ("yes", "NO (expected now and then in "
                                                       "bfloat16)")  # fmt: skip
    ctx.dtype = torch.float32
    assert ctx.verdict(False) == "NO"


def test_engine_loads_a_directory_onto_the_device_in_the_dtype(model_dir):
    path, model, tokenizer = model_dir
    llm = LLM(path, device="cpu", dtype=torch.bfloat16, num_blocks=16)
    assert next(llm.model.parameters()).dtype == torch.bfloat16
    assert {(t.device.type, t.dtype) for t in (*llm.cache.keys, *llm.cache.values)} == {
        ("cpu", torch.bfloat16)
    }
    assert llm.tokenizer.encode("whether") == tokenizer.encode("whether")
    assert len(llm.generate("whether", SamplingParams(temperature=0, max_tokens=4))[0].token_ids)
