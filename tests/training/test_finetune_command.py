"""`llm-internals finetune` end to end (with --merge, then `generate --adapter`), and its errors."""

from __future__ import annotations

import pytest
import torch

from llm_internals.cli import main
from llm_internals.errors import LLMInternalsError
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.tokenizer.char import CharTokenizer

TEXT = "".join(f"to be or not {i % 9} to be.\n" for i in range(200))


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _base(directory, d_model=64):
    tokenizer = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=d_model, n_layers=1,
                         n_heads=2, d_ff=2 * d_model, max_seq_len=32, family="llama")  # fmt: skip
    save_checkpoint(DecoderLM(config), directory)
    tokenizer.save(directory / "tokenizer.json")
    (directory.parent / "data.txt").write_text(TEXT)
    return directory


def _finetune(base, out, *extra):
    return main(["--debug", "finetune", "--model", str(base), "--data",
                 str(base.parent / "data.txt"), "--out", str(out), "--steps", "4",
                 "--batch-size", "2", "--block-size", "16", "--eval-interval", "2",
                 "--eval-iters", "1", "--lora-r", "2", "--device", "cpu", *extra])  # fmt: skip


def test_finetune_merge_and_generate_with_the_adapter(tmp_path, capsys):
    base = _base(tmp_path / "base")
    assert _finetune(base, tmp_path / "run", "--qlora", "--targets", "all-linear", "--merge",
                     "--dtype", "bfloat16") == 0  # fmt: skip
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                 "merged/config.json", "merged-hf/config.json", "log.jsonl", "latest"):  # fmt: skip
        assert (tmp_path / "run" / name).is_file(), name
    capsys.readouterr()
    generate = ["generate", "--prompt", "to be", "--max-new-tokens", "12", "--temperature", "0",
                "--device", "cpu"]  # fmt: skip
    main([*generate, "--model", str(base), "--adapter", str(tmp_path / "run")])
    with_adapter = capsys.readouterr().out
    main([*generate, "--model", str(tmp_path / "run" / "merged")])
    assert capsys.readouterr().out.split("\n")[0] == with_adapter.split("\n")[0]
    main([*generate, "--model", str(base)])
    assert capsys.readouterr().out.split("\n")[0] != with_adapter.split("\n")[0]


def test_finetune_errors_name_the_flag(tmp_path):
    base = _base(tmp_path / "base")
    cases = [
        (("--resume",), "holds no fine-tuning run", "drop --resume"),
        (("--block-size", "64"), "longer than the model's context", "--block-size 32"),
        (("--targets", "q,lm_head"), "unknown LoRA target 'lm_head'", "--targets"),
        (("--lora-r", "0"), "rank must be a positive integer", "--lora-r"),
    ]
    for extra, message, hint in cases:
        with pytest.raises(LLMInternalsError, match=message) as err:
            _finetune(base, tmp_path / "run", *extra)
        assert hint in err.value.hint
    with pytest.raises(LLMInternalsError, match="multiple of the block size 64"):
        _finetune(_base(tmp_path / "narrow", d_model=36), tmp_path / "narrow-run", "--qlora")
    _finetune(base, tmp_path / "done")
    with pytest.raises(LLMInternalsError, match="already holds a fine-tuning run") as err:
        _finetune(base, tmp_path / "done")
    assert "--resume" in err.value.hint
