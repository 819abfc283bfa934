"""EncoderLM (BERT) against HF BertForMaskedLM / BertModel: logits, hidden states, round trip,
checkpoint variants and clear errors. Tiny random HF models are built and saved live."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.models import load_pretrained, save_pretrained
from llm_internals.models.encoder import EncoderLM

TOL = 1e-4
VOCAB = 100
PATHS = [("scratch", False), ("sdpa", False), ("sdpa", True)]  # written out ... fast path


def make_config(**overrides) -> transformers.BertConfig:
    """layer_norm_eps away from its 1e-12 default, so a loader that ignored it fails."""
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=40, type_vocab_size=3,
                  pad_token_id=0, layer_norm_eps=0.05) | overrides  # fmt: skip
    return transformers.BertConfig(**kwargs)


def perturbed(model: transformers.PreTrainedModel, seed: int = 0) -> transformers.PreTrainedModel:
    """Move every weight off its init: unit LayerNorm gains and zero biases hide mapping bugs."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory):
    model = perturbed(transformers.BertForMaskedLM(make_config()))
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return model, path


def padded_batch(seed: int = 0):
    """Three rows of 11 tokens: row 1 right-padded, row 2 left-padded; random token types."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 11), generator=gen)
    types = torch.randint(0, 3, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, :3] = 0
    return ids, types, mask


@pytest.mark.parametrize(("attn_impl", "fused_ops"), PATHS)
def test_mlm_logits_match_hf_on_a_padded_batch(bert_mlm, attn_impl, fused_ops):
    hf, path = bert_mlm
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    assert isinstance(ours, EncoderLM) and ours.config.family == "bert"
    assert ours.lm_head.is_tied_to(ours.tok_emb)
    ids, types, mask = padded_batch()
    with torch.no_grad():
        got = ours(ids, token_type_ids=types, attention_mask=mask)
        expected = hf(ids, token_type_ids=types, attention_mask=mask).logits
    assert got.shape == expected.shape == (3, 11, VOCAB)
    assert (got - expected).abs().max().item() < TOL
    with torch.no_grad():  # without a mask or token types
        assert (ours(ids) - hf(ids).logits).abs().max().item() < TOL


def test_hidden_states_match_bert_model(bert_mlm):
    hf, path = bert_mlm
    ours = load_pretrained(path)
    ids, types, mask = padded_batch(seed=1)
    with torch.no_grad():
        got = ours.hidden_states(ids, token_type_ids=types, attention_mask=mask)
        expected = hf.bert(ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    assert (got - expected).abs().max().item() < TOL


def test_padding_leaves_real_tokens_unchanged(bert_mlm):
    """Bidirectional attention with a padding mask: a padded row equals the row run alone."""
    _, path = bert_mlm
    ours = load_pretrained(path)
    ids, types, mask = padded_batch(seed=2)
    with torch.no_grad():
        batch = ours(ids, token_type_ids=types, attention_mask=mask)
        right = ours(ids[1:2, :7], token_type_ids=types[1:2, :7])
        left = ours(
            ids[2:3, 3:], token_type_ids=types[2:3, 3:], positions=torch.arange(3, 11)[None]
        )
    assert (batch[1, :7] - right[0]).abs().max().item() < TOL
    assert (batch[2, 3:] - left[0]).abs().max().item() < TOL
    assert not torch.isnan(batch).any()


@pytest.mark.parametrize(
    "overrides",
    [{"tie_word_embeddings": False}, {"hidden_act": "gelu_new"}, {"hidden_act": "relu"}],
    ids=["untied", "gelu_tanh", "relu"],
)
def test_config_variants_match_hf(tmp_path, overrides):
    hf = perturbed(transformers.BertForMaskedLM(make_config(**overrides)), seed=3)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert ours.lm_head.is_tied_to(ours.tok_emb) == overrides.get("tie_word_embeddings", True)
    ids, types, mask = padded_batch(seed=3)
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types, attention_mask=mask).logits
        assert (ours(ids, types, mask) - expected).abs().max().item() < TOL
    save_pretrained(ours, tmp_path / "ours")
    reloaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = reloaded(ids, token_type_ids=types, attention_mask=mask).logits
    assert (again - expected).abs().max().item() < TOL


def test_bert_model_checkpoint_loads_without_head(tmp_path):
    """A BertModel file: no "bert." prefix, a pooler (dropped), no masked-LM head."""
    hf = perturbed(transformers.BertModel(make_config()), seed=4)
    hf.save_pretrained(tmp_path)
    assert "pooler.dense.weight" in load_file(tmp_path / "model.safetensors")
    ours = load_pretrained(tmp_path)
    ids, types, mask = padded_batch(seed=4)
    with torch.no_grad():
        got = ours.hidden_states(ids, types, mask)
        expected = hf(ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    assert (got - expected).abs().max().item() < TOL
    with pytest.raises(LLMInternalsError, match="no masked-LM head"):
        ours(ids)
    save_pretrained(ours, tmp_path / "ours")  # round trip keeps the encoder (pooler re-initialized)
    reloaded = transformers.BertModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = reloaded(ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    assert (again - expected).abs().max().item() < TOL


def test_pretraining_checkpoint_with_legacy_names(tmp_path):
    """BertForPreTraining files carry a pooler and a next-sentence head; TF-converted ones say
    LayerNorm.gamma/beta and store the decoder bias twice. All of that loads."""
    hf = perturbed(transformers.BertForPreTraining(make_config()), seed=5)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tf_names = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    legacy = {}
    for name, tensor in tensors.items():
        for new, old in tf_names.items():
            name = name.replace(new, old)
        legacy[name] = tensor
    legacy["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].clone()
    legacy["cls.predictions.decoder.weight"] = tensors[
        "bert.embeddings.word_embeddings.weight"
    ].clone()
    save_file(legacy, tmp_path / "model.safetensors")
    ours = load_pretrained(tmp_path)
    ids, types, mask = padded_batch(seed=5)
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types, attention_mask=mask).prediction_logits
        assert (ours(ids, types, mask) - expected).abs().max().item() < TOL


def test_round_trip_through_save_pretrained_loads_in_transformers(bert_mlm, tmp_path):
    hf, path = bert_mlm
    ours = load_pretrained(path)
    save_pretrained(ours, tmp_path)
    reloaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is transformers.BertForMaskedLM
    ids, types, mask = padded_batch(seed=6)
    with torch.no_grad():
        expected = hf(ids, token_type_ids=types, attention_mask=mask).logits
        again = reloaded(ids, token_type_ids=types, attention_mask=mask).logits
        assert (again - expected).abs().max().item() < TOL
        assert (
            load_pretrained(tmp_path)(ids, types, mask) - ours(ids, types, mask)
        ).abs().max() == 0


def _rewrite(path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


def test_missing_and_misshaped_tensors_are_named(bert_mlm, tmp_path):
    hf, _ = bert_mlm
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda t: t.pop("bert.encoder.layer.1.attention.self.key.bias"))
    with pytest.raises(LLMInternalsError, match=r"missing tensor\(s\): bert\.encoder\.layer\.1"):
        load_pretrained(tmp_path)
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"cls.predictions.bias": torch.zeros(VOCAB + 1)}))
    with pytest.raises(LLMInternalsError, match=r"cls\.predictions\.bias has shape \(101,\)"):
        load_pretrained(tmp_path)
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"bert.extra.weight": torch.zeros(2)}))
    with pytest.raises(LLMInternalsError, match=r"unexpected tensor\(s\): bert\.extra\.weight"):
        load_pretrained(tmp_path)


def test_unsupported_configs_are_refused(tmp_path):
    transformers.BertForSequenceClassification(make_config()).save_pretrained(tmp_path)
    with pytest.raises(LLMInternalsError, match="BertForSequenceClassification"):
        load_pretrained(tmp_path)


def test_bad_inputs_give_clear_errors(bert_mlm):
    _, path = bert_mlm
    ours = load_pretrained(path)
    ids = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(LLMInternalsError, match="out of range"):
        ours(torch.full((1, 3), VOCAB))
    with pytest.raises(LLMInternalsError, match="token type ids: id 3"):
        ours(ids, token_type_ids=torch.full_like(ids, 3))
    with pytest.raises(LLMInternalsError, match="integer tensor"):
        ours(ids.float())
    with pytest.raises(LLMInternalsError, match="max_seq_len=40"):
        ours(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(LLMInternalsError, match="attention_mask must have shape"):
        ours(ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(LLMInternalsError, match=r"positions must lie in \[0, 40\)"):
        ours(ids, positions=torch.arange(36, 41)[None])
