"""Quantised checkpoints: write -> load gives exactly the logits of the model quantised in memory,
for every scheme; `quantize` then `generate --model OUT` work from the command line; bad input
(a group size that does not divide, a missing scale, an unknown scheme) is one clear error and
leaves nothing written."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.models.quantized_checkpoint import (
    load_quantized_checkpoint,
    save_quantized_checkpoint,
)
from llm_internals.quant.linear import QuantizedLinear, quantize_model, use_kernel_activations
from llm_internals.tokenizer import train_bpe

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 6
SCHEMES = ["int8", "int8-zp", "int4-g32", "fp8-e4m3", "fp8-e5m2", "mxfp4", "nvfp4", "nf4", "w8a8",
           "bf16"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXT, 280)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=64, n_layers=2, n_heads=4,
                         n_kv_heads=2, d_ff=128, max_seq_len=64, norm="rmsnorm", ffn="gated",
                         activation="silu", position="rope", tie_embeddings=True)  # fmt: skip
    return DecoderLM(config).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, model, tokenizer):
    path = tmp_path_factory.mktemp("fp32") / "model"
    save_checkpoint(model, path)
    tokenizer.save(path / "tokenizer.json")
    return path


@pytest.mark.parametrize("scheme", SCHEMES)
def test_write_load_gives_the_in_memory_logits(tmp_path, model, tokenizer, scheme):
    quantized = copy.deepcopy(model)
    modules = quantize_model(quantized, scheme)
    assert len(modules) == 2 * 7  # q, k, v, o, gate, up, down per block
    save_quantized_checkpoint(quantized, scheme, modules, tmp_path / "out")
    loaded = load_quantized_checkpoint(tmp_path / "out").eval()
    assert sum(isinstance(m, QuantizedLinear) for m in loaded.modules()) == len(modules)
    use_kernel_activations(quantized)  # as loading does: int8/int4 through torch's CPU kernels
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # the tie survives
    ids = torch.tensor([tokenizer.encode("whether 'tis nobler")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), quantized(ids), atol=0, rtol=0)
        # and the quantised model is still the model (loose: 4-bit formats move logits a little)
        assert (loaded(ids) - model(ids)).abs().max() < 0.1 * model(ids).abs().max()


def test_quantize_command_then_generate(tmp_path, folder, tokenizer, capsys):
    out = tmp_path / "int4"
    assert (
        main(["quantize", "--model", str(folder), "--scheme", "int4-g32", "--out", str(out)]) == 0
    )
    meta = json.loads((out / "config.json").read_text())
    assert meta["quantization"]["scheme"] == "int4-g32"
    stored = load_file(out / "model.safetensors")
    assert stored["blocks.0.attn.q_proj.weight"].dtype == torch.uint8
    assert stored["blocks.0.attn.q_proj.weight"].shape == (64, 32)  # two codes a byte
    assert stored["blocks.0.attn.q_proj.weight_scale"].shape == (64, 2)
    assert (out / "tokenizer.json").exists()
    model, loaded_tokenizer, _ = load_model_and_tokenizer(out)
    assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
    assert isinstance(model.blocks[0].ffn.down_proj, QuantizedLinear)
    args = ["generate", "--model", str(out), "--prompt", "To be", "--max-new-tokens", "4",
            "--temperature", "0"]  # fmt: skip
    assert main(args) == 0
    assert "To be" in capsys.readouterr().out


def test_group_that_does_not_divide_is_an_error_and_writes_nothing(tmp_path, folder, capsys):
    out = tmp_path / "int4"
    args = ["quantize", "--model", str(folder), "--scheme", "int4-g128", "--out", str(out)]
    assert main(args) == 2
    message = " ".join(capsys.readouterr().out.split())
    assert "'blocks.0.attn.q_proj.weight' of shape (64, 64)" in message and "128" in message
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


def test_existing_output_folder_is_refused(tmp_path, folder):
    (tmp_path / "taken").mkdir()
    args = ["--debug", "quantize", "--model", str(folder), "--scheme", "int8", "--out",
            str(tmp_path / "taken")]  # fmt: skip
    with pytest.raises(LLMInternalsError, match="already exists"):
        main(args)


def _quantized_folder(tmp_path, model, scheme="int8"):
    quantized = copy.deepcopy(model)
    save_quantized_checkpoint(quantized, scheme, quantize_model(quantized, scheme), tmp_path / "q")
    return tmp_path / "q"


def test_missing_scale_names_the_tensor(tmp_path, model):
    out = _quantized_folder(tmp_path, model)
    tensors = load_file(out / "model.safetensors")
    del tensors["blocks.1.ffn.up_proj.weight_scale"]
    save_file(tensors, out / "model.safetensors")
    meta = json.loads((out / "config.json").read_text())
    del meta["checksums"]
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(LLMInternalsError, match=r"'blocks.1.ffn.up_proj.weight_scale'.*missing"):
        load_model_and_tokenizer(out, require_tokenizer=False)


def test_unknown_scheme_in_config_lists_the_known_ones(tmp_path, model):
    out = _quantized_folder(tmp_path, model)
    meta = json.loads((out / "config.json").read_text())
    meta["quantization"]["scheme"] = "int3"
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(LLMInternalsError, match="int3") as err:
        load_quantized_checkpoint(out)
    assert "nvfp4" in err.value.hint


@pytest.mark.parametrize("scheme", ["int8", "int4-g32"])
def test_bfloat16_load_runs_the_kernels_and_keeps_the_parts(tmp_path, model, tokenizer, scheme):
    quantized = copy.deepcopy(model)
    save_quantized_checkpoint(quantized, scheme, quantize_model(quantized, scheme), tmp_path / "q")
    loaded = load_quantized_checkpoint(tmp_path / "q", dtype=torch.bfloat16).eval()
    layer = loaded.blocks[0].attn.q_proj
    assert (
        layer.weight_scale.dtype == torch.float32 and loaded.tok_emb.weight.dtype == torch.bfloat16
    )
    ids = torch.tensor([tokenizer.encode("whether 'tis nobler")])
    with torch.no_grad():
        fast = loaded(ids).float()
        for module in loaded.modules():
            if isinstance(module, QuantizedLinear):
                module.use_kernel = False
        general = loaded(ids).float()
    torch.testing.assert_close(fast, general, atol=0.05, rtol=0.05)


def test_paged_engine_serves_a_quantised_folder(tmp_path, model, tokenizer):
    """What `serve --model OUT` runs: the engine loads the folder and decodes like generate."""
    from llm_internals.inference.generate import generate
    from llm_internals.inference.paged import LLM
    from llm_internals.inference.params import SamplingParams

    out = _quantized_folder(tmp_path, model, "int4-g32")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer.to_hf()))
    llm = LLM(str(out), block_size=4, num_blocks=64)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    engine_ids = llm.generate([[5, 6, 7]], params)[0].token_ids
    loaded, _, _ = load_model_and_tokenizer(out, require_tokenizer=False)
    expected = generate(loaded, None, [5, 6, 7], max_new_tokens=6, eos_token_id=None).token_ids
    assert isinstance(llm.model.blocks[0].attn.q_proj, QuantizedLinear)
    assert list(engine_ids) == list(expected)
