"""BERT and Marian through our own checkpoint format and the per-component parameter count."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, MarianConfig, MarianMTModel

from llm_internals.models import (
    count_model_parameters,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
)


def _tiny_bert():
    return BertForMaskedLM(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
        )
    )


def _tiny_marian():
    return MarianMTModel(
        MarianConfig(
            vocab_size=99,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            pad_token_id=0,
            decoder_start_token_id=0,
        )
    )


@pytest.mark.parametrize("build", [_tiny_bert, _tiny_marian])
def test_own_checkpoint_round_trip_and_component_counts(build, tmp_path):
    torch.manual_seed(0)
    build().save_pretrained(tmp_path / "hf")
    model = load_pretrained(tmp_path / "hf")
    save_checkpoint(model, tmp_path / "ours")
    again = load_checkpoint(tmp_path / "ours")
    assert type(again) is type(model)
    original, loaded = model.state_dict(), again.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    counts = count_model_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["attention"] > 0 and counts["ffn"] > 0 and counts["embeddings"] > 0
