"""Fine-tuning on the trainer's loop: the loss falls (LoRA and QLoRA), a resumed run continues
exactly as the uninterrupted one, the adapter folder reproduces the trained model, and --merge's
folders (ours and HF) give the adapted logits."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.adapters import LoraSettings, load_adapter
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.training.config import TrainConfig
from llm_internals.training.finetune import FinetuneSpec
from llm_internals.training.finetune_run import merge_run, run_finetune

TEXT = "".join(f"the cat {i % 7} sat on the mat {i % 5}.\n" for i in range(300))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny Llama-shaped model (widths multiples of 64 for NF4) with a character tokenizer."""
    directory = tmp_path_factory.mktemp("base")
    tokenizer = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=64, n_layers=2, n_heads=4,
                         n_kv_heads=2, d_ff=128, max_seq_len=64, family="llama")  # fmt: skip
    save_checkpoint(DecoderLM(config), directory)
    tokenizer.save(directory / "tokenizer.json")
    (directory.parent / "data.txt").write_text(TEXT)
    return directory


def _config(base_dir, out, **changes) -> TrainConfig:
    fields = dict(corpus=str(base_dir.parent / "data.txt"), out_dir=str(out), batch_size=4,
                  block_size=32, max_steps=12, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                  weight_decay=0.0, eval_interval=4, eval_iters=2, log_interval=1,
                  checkpoint_interval=0)  # fmt: skip
    return TrainConfig(**{**fields, **changes})


def _run(base_dir, out, spec=None, **kwargs):
    config_changes = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("resume", "until")}
    spec = spec or FinetuneSpec(lora=LoraSettings(r=4, alpha=8, dropout=0.1), targets="all-linear")
    return run_finetune(base_dir, spec, _config(base_dir, out, **config_changes),
                        show_progress=False, **kwargs)  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_finetuning_lowers_the_validation_loss(base_dir, tmp_path, method):
    spec = FinetuneSpec(method=method, lora=LoraSettings(r=4, alpha=8), targets="all-linear")
    result = _run(base_dir, tmp_path, spec)
    vals = [r["val_loss"] for r in result.history if "val_loss" in r]
    assert [r["step"] for r in result.history if "val_loss" in r] == [0, 4, 8, 12]
    base_val = vals[0]  # evaluated before the first step
    assert vals[1] > vals[2] > vals[3] and vals[3] < base_val - 0.1, vals


def test_resume_continues_identically(base_dir, tmp_path):
    straight = _run(base_dir, tmp_path / "a", checkpoint_interval=3)
    _run(base_dir, tmp_path / "b", checkpoint_interval=3, until=6)
    resumed = _run(base_dir, tmp_path / "b", checkpoint_interval=3, resume=True)
    assert resumed.step_losses == straight.step_losses  # exact: same batches, dropout, updates
    a = (tmp_path / "a/adapter/adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "b/adapter/adapter_model.safetensors").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").glob("step-*")) == ["step-00000009",
                                                                       "step-00000012"]  # fmt: skip


def test_adapter_and_merged_models_give_the_adapted_logits(base_dir, tmp_path):
    _run(base_dir, tmp_path, max_steps=4)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    model, _, _ = load_model_and_tokenizer(base_dir)
    load_adapter(model, tmp_path / "adapter")
    with torch.no_grad():
        adapted, base = model(ids), load_model_and_tokenizer(base_dir).model(ids)
    assert (adapted - base).abs().max() > 1e-3  # the adapter learned something
    merged_dir, hf_dir = merge_run(tmp_path, tmp_path / "out")
    with torch.no_grad():
        merged = load_model_and_tokenizer(merged_dir).model(ids)
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()(ids).logits
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-5)
    torch.testing.assert_close(hf, adapted, rtol=0, atol=1e-5)
