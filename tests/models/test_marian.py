"""Seq2SeqLM (the Transformer encoder-decoder) against HF MarianMTModel: logits with padded source
and target batches, encode/decode, round trip, checkpoint variants and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from llm_internals.errors import LLMInternalsError
from llm_internals.models import load_pretrained, save_pretrained
from llm_internals.models.seq2seq import Seq2SeqLM

TOL = 1e-4
VOCAB = 100
PAD = VOCAB - 1
PATHS = [("scratch", False), ("sdpa", False), ("sdpa", True)]  # written out ... fast path


def make_config(**overrides) -> transformers.MarianConfig:
    """Encoder and decoder of different depth, heads and FFN width, so no field is confused."""
    kwargs = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3,
                  encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=37,
                  decoder_ffn_dim=41, max_position_embeddings=40, pad_token_id=PAD,
                  decoder_start_token_id=PAD, eos_token_id=0, scale_embedding=True,
                  activation_function="swish") | overrides  # fmt: skip
    return transformers.MarianConfig(**kwargs)


def perturbed(model: transformers.MarianMTModel, seed: int = 0) -> transformers.MarianMTModel:
    """Move every weight off its init (and give final_logits_bias values); the fixed sinusoid
    tables stay as they are, as in every real checkpoint."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" not in name:
                param.add_(torch.randn_like(param) * 0.05)
        model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias))
    return model.eval()


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    model = perturbed(transformers.MarianMTModel(make_config()))
    path = tmp_path_factory.mktemp("marian")
    model.save_pretrained(path)
    return model, path


def padded_batch(seed: int = 0, target_vocab: int = VOCAB):
    """Sources of 11 tokens (row 1 right-padded, row 2 left-padded) and targets of 7 tokens
    (row 0 right-padded)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, VOCAB - 1, (3, 11), generator=gen)
    tgt = torch.randint(0, target_vocab - 1, (3, 7), generator=gen)
    src_mask, tgt_mask = torch.ones_like(src), torch.ones_like(tgt)
    src_mask[1, 7:] = 0
    src_mask[2, :3] = 0
    tgt_mask[0, 5:] = 0
    return src, tgt, src_mask, tgt_mask


def hf_logits(hf, src, tgt, src_mask=None, tgt_mask=None) -> torch.Tensor:
    with torch.no_grad():
        return hf(
            input_ids=src,
            attention_mask=src_mask,
            decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask,
            use_cache=False,
        ).logits


@pytest.mark.parametrize(("attn_impl", "fused_ops"), PATHS)
def test_logits_match_hf_on_padded_batches(marian, attn_impl, fused_ops):
    hf, path = marian
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    assert isinstance(ours, Seq2SeqLM) and ours.config.family == "marian"
    assert ours.lm_head.is_tied_to(ours.tok_emb) and ours.src_emb is None
    assert len(ours.encoder_blocks) == 2 and len(ours.decoder_blocks) == 3
    src, tgt, src_mask, tgt_mask = padded_batch()
    with torch.no_grad():
        got = ours(src, tgt, src_mask, tgt_mask)
        plain = ours(src, tgt)
    expected = hf_logits(hf, src, tgt, src_mask, tgt_mask)
    assert got.shape == expected.shape == (3, 7, VOCAB)
    assert (got - expected).abs().max().item() < TOL
    assert (plain - hf_logits(hf, src, tgt)).abs().max().item() < TOL


def test_encode_then_decode_equals_forward_and_matches_hf_encoder(marian):
    hf, path = marian
    ours = load_pretrained(path)
    src, tgt, src_mask, tgt_mask = padded_batch(seed=1)
    with torch.no_grad():
        memory = ours.encode(src, src_mask)
        expected_memory = hf.model.encoder(input_ids=src, attention_mask=src_mask).last_hidden_state
        assert (memory - expected_memory).abs().max().item() < TOL
        logits = ours.logits(ours.decode(tgt, memory, src_mask, tgt_mask))
        assert torch.equal(logits, ours(src, tgt, src_mask, tgt_mask))


def test_decoder_is_causal_and_source_padding_is_invisible(marian):
    """Target position t depends only on targets <= t; padded source tokens change nothing."""
    _, path = marian
    ours = load_pretrained(path)
    src, tgt, _, _ = padded_batch(seed=2)
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % (VOCAB - 1)
    with torch.no_grad():
        a, b = ours(src, tgt), ours(src, changed)
        assert (a[:, :4] - b[:, :4]).abs().max().item() < 1e-6
        assert (a[:, 4:] - b[:, 4:]).abs().max().item() > 1e-3
        src_mask = torch.ones_like(src)
        src_mask[:, 8:] = 0
        noise = src.clone()
        noise[:, 8:] = (noise[:, 8:] + 7) % (VOCAB - 1)
        masked = ours(src, tgt, src_mask)
        assert (masked - ours(noise, tgt, src_mask)).abs().max().item() < 1e-6
        assert (masked - ours(src[:, :8], tgt)).abs().max().item() < TOL


def test_sinusoidal_table_and_embedding_scale_are_marians(marian):
    hf, path = marian
    ours = load_pretrained(path)
    assert torch.equal(ours.pos_emb.table, hf.model.encoder.embed_positions.weight)
    assert ours.embed_scale == pytest.approx(math.sqrt(32))
    position, pair = 5, 3  # all sines first, then all cosines (not interleaved)
    angle = position / 10000 ** (2 * pair / 32)
    assert ours.pos_emb.table[position, pair].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert ours.pos_emb.table[position, 16 + pair].item() == pytest.approx(
        math.cos(angle), abs=1e-6
    )


SMALL_PAD = {"pad_token_id": 79, "decoder_start_token_id": 79}  # inside both vocabularies


@pytest.mark.parametrize(
    "overrides",
    [
        {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 80,
         "tie_word_embeddings": False} | SMALL_PAD,
        {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 80} | SMALL_PAD,
        {"scale_embedding": False, "activation_function": "gelu", "tie_word_embeddings": False},
    ],
    ids=["separate_untied", "separate_tied", "unscaled_gelu_untied"],
)  # fmt: skip
def test_config_variants_match_hf_and_round_trip(tmp_path, overrides):
    hf = perturbed(transformers.MarianMTModel(make_config(**overrides)), seed=3)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    tied = overrides.get("tie_word_embeddings", True)
    # transformers 5 shares the embedding tables only together with the output head
    shared = overrides.get("share_encoder_decoder_embeddings", True) and tied
    assert (ours.src_emb is None) == shared
    assert ours.lm_head.is_tied_to(ours.tok_emb) == tied
    target_vocab = overrides.get("decoder_vocab_size", VOCAB)
    src, tgt, src_mask, tgt_mask = padded_batch(seed=3, target_vocab=target_vocab)
    expected = hf_logits(hf, src, tgt, src_mask, tgt_mask)
    with torch.no_grad():
        got = ours(src, tgt, src_mask, tgt_mask)
    assert got.shape[-1] == target_vocab
    assert (got - expected).abs().max().item() < TOL
    save_pretrained(ours, tmp_path / "ours")
    reloaded = transformers.MarianMTModel.from_pretrained(tmp_path / "ours").eval()
    again = hf_logits(reloaded, src, tgt, src_mask, tgt_mask)
    assert (again - expected).abs().max().item() < TOL


def test_round_trip_through_save_pretrained_loads_in_transformers(marian, tmp_path):
    hf, path = marian
    ours = load_pretrained(path)
    save_pretrained(ours, tmp_path)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is transformers.MarianMTModel
    src, tgt, src_mask, tgt_mask = padded_batch(seed=4)
    expected = hf_logits(hf, src, tgt, src_mask, tgt_mask)
    assert (hf_logits(reloaded, src, tgt, src_mask, tgt_mask) - expected).abs().max().item() < TOL
    with torch.no_grad():
        mine = load_pretrained(tmp_path)(src, tgt, src_mask, tgt_mask)
        assert torch.equal(mine, ours(src, tgt, src_mask, tgt_mask))


def _rewrite(path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


def test_stored_position_tables_and_missing_bias_load_like_transformers(marian, tmp_path):
    """Older files store the sinusoid tables (checked, then dropped); a file without
    final_logits_bias means zeros, as transformers reads it."""
    hf, _ = marian
    hf.save_pretrained(tmp_path)
    tables = {
        "model.encoder.embed_positions.weight": hf.model.encoder.embed_positions.weight,
        "model.decoder.embed_positions.weight": hf.model.decoder.embed_positions.weight,
    }
    _rewrite(tmp_path, lambda t: (t.update(tables), t.pop("final_logits_bias")))
    ours = load_pretrained(tmp_path)
    assert torch.equal(ours.final_logits_bias, torch.zeros(VOCAB))
    reference = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    src, tgt, src_mask, tgt_mask = padded_batch(seed=5)
    with torch.no_grad():
        got = ours(src, tgt, src_mask, tgt_mask)
    assert (got - hf_logits(reference, src, tgt, src_mask, tgt_mask)).abs().max().item() < TOL
    wrong = {name: table + 0.5 for name, table in tables.items()}
    _rewrite(tmp_path, lambda t: t.update(wrong))
    with pytest.raises(LLMInternalsError, match="embed_positions.weight differs"):
        load_pretrained(tmp_path)


def test_missing_and_misshaped_tensors_are_named(marian, tmp_path):
    hf, _ = marian
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda t: t.pop("model.decoder.layers.2.encoder_attn.v_proj.weight"))
    with pytest.raises(
        LLMInternalsError, match=r"missing tensor\(s\): model\.decoder\.layers\.2\.encoder_attn"
    ):
        load_pretrained(tmp_path)
    hf.save_pretrained(tmp_path)
    _rewrite(
        tmp_path, lambda t: t.update({"model.encoder.layers.0.fc1.weight": torch.zeros(36, 32)})
    )
    with pytest.raises(
        LLMInternalsError, match=r"fc1\.weight has shape \(36, 32\), expected \(37, 32\)"
    ):
        load_pretrained(tmp_path)


def test_bad_inputs_give_clear_errors(marian):
    _, path = marian
    ours = load_pretrained(path)
    src = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(LLMInternalsError, match="target ids: id 100 is out of range"):
        ours(src, torch.full((2, 3), VOCAB))
    with pytest.raises(LLMInternalsError, match="source ids: 41 tokens exceed"):
        ours(torch.zeros(1, 41, dtype=torch.long), src[:1])
    with pytest.raises(LLMInternalsError, match="src_mask must have shape"):
        ours(src, src, src_mask=torch.ones(2, 4))
    with pytest.raises(LLMInternalsError, match="integer tensor"):
        ours(src.float(), src)
    with pytest.raises(LLMInternalsError, match="encoder output must have shape"):
        ours.decode(src, torch.zeros(3, 5, 32))
