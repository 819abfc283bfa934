"""`perplexity`: the windowed mean loss equals cross-entropy computed directly over each window
(every token after the first predicted once), and the command runs on a quantised folder."""

from __future__ import annotations

import copy
import math
import re

import torch
from torch.nn import functional as F

from llm_internals.cli import main
from llm_internals.commands.perplexity import mean_token_loss
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderLM
from llm_internals.models.quantized_checkpoint import save_quantized_checkpoint
from llm_internals.quant.linear import quantize_model
from llm_internals.tokenizer import train_bpe

TEXT = "To be, or not to be, that is the question:\nwhether 'tis nobler in the mind.\n" * 20


def _model(vocab: int) -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2,
                                 max_seq_len=16)).eval()  # fmt: skip


def test_windows_predict_every_token_once():
    model = _model(50)
    ids = torch.randint(0, 50, (40,))
    loss, count = mean_token_loss(model, ids, context=16, batch_size=2)
    assert count == 39
    # reference: windows [0, 17), [16, 33), [32, 40), each scored in full
    total = 0.0
    for start in (0, 16, 32):
        window = ids[start : start + 17]
        with torch.no_grad():
            logits = model(window[None, :-1])[0]
        total += F.cross_entropy(logits, window[1:], reduction="sum").item()
    assert math.isclose(loss, total / 39, rel_tol=1e-6)


def test_command_on_fp32_and_quantised_folders(tmp_path, capsys):
    tokenizer = train_bpe(TEXT, 300)
    model = _model(tokenizer.vocab_size)
    save_checkpoint(model, tmp_path / "fp32")
    tokenizer.save(tmp_path / "fp32" / "tokenizer.json")
    quantized = copy.deepcopy(model)
    save_quantized_checkpoint(quantized, "int8", quantize_model(quantized, "int8"), tmp_path / "q",
                              tmp_path / "fp32" / "tokenizer.json")  # fmt: skip
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    values = []
    for folder in ("fp32", "q"):
        assert main(["perplexity", "--model", str(tmp_path / folder), "--data", str(data),
                     "--device", "cpu"]) == 0  # fmt: skip
        values.append(float(re.search(r"perplexity ([\d.]+)", capsys.readouterr().out).group(1)))
    assert values[0] != values[1] and abs(values[0] - values[1]) < 0.01 * values[0]
