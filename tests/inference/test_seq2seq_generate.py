"""Encoder-decoder generation (Seq2SeqLM imported from a tiny random HF MarianMTModel): greedy with
the KV caches == without, token for token, and == HF `generate` (greedy, use_cache=True), on a
single source and on a padded batch; the cross-attention K/V are computed once."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.inference.generate import generate, stream
from llm_internals.models import load_pretrained
from llm_internals.trace import recording

VOCAB = 60
PAD = VOCAB - 1
EOS = 36  # a token this random model emits for some sources: those rows end early with eos
MAX_NEW = 12


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """A tiny random Marian (encoder and decoder of different shapes), weights moved off init
    so greedy outputs are varied, saved and imported with our loader."""
    torch.manual_seed(0)
    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_ffn_dim=41, max_position_embeddings=40, pad_token_id=PAD,
        decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS,
    )  # fmt: skip
    hf = transformers.MarianMTModel(config)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "embed_positions" not in name:
                param.add_(torch.randn_like(param) * 0.5)
    hf.eval()
    path = tmp_path_factory.mktemp("marian")
    hf.save_pretrained(path)
    return hf, load_pretrained(path), path


def sources(n: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [9, 4, 7, 6][:n]
    return [torch.randint(1, PAD, (length,), generator=gen).tolist() for length in lengths]


def hf_greedy(hf, prompts: list[list[int]], logits: bool = False):
    """HF generate on a right-padded source batch; output cut at the first eos, which (like our
    token_ids) is not included, and without the decoder start token.

    Marian generation configs carry forced_eos_token_id (force eos at max_length) and real
    checkpoints bad_words_ids=[[pad]] (never emit pad). Both are disabled here: our generate has
    no forced-eos or banned-word processor, and with them HF would not be plain greedy.
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p)
        mask[row, : len(p)] = 1
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
            num_beams=1, use_cache=True, forced_eos_token_id=None, bad_words_ids=None,
            decoder_start_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    results = []
    for row in out.sequences[:, 1:].tolist():
        results.append(row[: row.index(EOS)] if EOS in row else row)
    return (results, torch.stack(out.logits, dim=1)) if logits else results


def test_marian_greedy_matches_hf_generate_single(marian):
    """Tokens, and the logits of every step (the random model repeats tokens, so the logits are
    the stronger check), equal HF generate's."""
    hf, ours, _ = marian
    prompt = sources(1, seed=1)[0]
    with recording() as rec:
        result = generate(ours, None, prompt, max_new_tokens=MAX_NEW, eos_token_id=None)
    expected, hf_logits = hf_greedy(hf, [prompt], logits=True)
    ours_logits = torch.stack(rec.all("seq2seq_logits"), dim=1)  # (1, steps, vocab)
    torch.testing.assert_close(
        ours_logits, hf_logits[:, : ours_logits.shape[1]], rtol=1e-4, atol=1e-4
    )
    assert result.token_ids == expected[0][: len(result.token_ids)]
    assert result.finish_reason in ("eos", "length")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_marian_padded_batch_matches_hf_and_no_cache(marian, padding_side):
    """Sources are right-padded whatever padding_side says (the encoder's positions count from
    column 0), so both sides give HF's (right-padded) result."""
    hf, ours, _ = marian
    prompts = sources(4, seed=2)
    cached = generate(ours, None, prompts, max_new_tokens=MAX_NEW, padding_side=padding_side)
    uncached = generate(
        ours, None, prompts, max_new_tokens=MAX_NEW, padding_side=padding_side, use_cache=False
    )
    expected = hf_greedy(hf, prompts)
    assert [r.token_ids for r in cached] == expected
    assert [r.token_ids for r in uncached] == expected
    for r, e in zip(cached, expected, strict=True):
        assert r.finish_reason == ("length" if len(e) == MAX_NEW else "eos")
    # The batch is varied enough to test something: an early eos and a full-length row.
    assert {r.finish_reason for r in cached} == {"eos", "length"}


def test_each_source_alone_equals_its_row_in_the_batch(marian):
    _, ours, _ = marian
    prompts = sources(4, seed=3)
    batch = generate(ours, None, prompts, max_new_tokens=MAX_NEW)
    for prompt, row in zip(prompts, batch, strict=True):
        assert generate(ours, None, prompt, max_new_tokens=MAX_NEW).token_ids == row.token_ids


def test_cross_attention_kv_computed_once_and_equal_to_projection(marian):
    _, ours, _ = marian
    prompt = sources(1, seed=4)[0]
    with recording() as rec:
        result = generate(ours, None, prompt, max_new_tokens=5, eos_token_id=None)
    layers = len(ours.decoder_blocks)
    assert len(result.token_ids) == 5
    keys = rec.all("cross_kv_cache.keys")
    assert len(keys) == layers  # once per layer, not once per step
    assert len(rec.all("seq2seq.encoder_output")) == 1
    memory = rec.get("seq2seq.encoder_output")
    for layer, k in enumerate(keys):
        attn = ours.decoder_blocks[layer].cross_attn
        with torch.no_grad():
            expected = attn.k_proj(memory).view(1, len(prompt), attn.n_kv_heads, attn.head_dim)
        torch.testing.assert_close(k, expected.transpose(1, 2), rtol=0, atol=1e-6)


def test_stream_yields_the_generated_tokens(marian):
    _, ours, _ = marian
    prompt = sources(1, seed=5)[0]
    chunks = list(stream(ours, None, prompt, max_new_tokens=MAX_NEW))
    result = generate(ours, None, prompt, max_new_tokens=MAX_NEW)
    tokens = [c.token_id for c in chunks if c.finish_reason not in ("eos",)]
    assert tokens == result.token_ids
    assert chunks[-1].finish_reason == result.finish_reason


def test_sampling_is_seeded_per_sequence(marian):
    _, ours, _ = marian
    prompts = sources(2, seed=6)
    first = generate(ours, None, prompts, max_new_tokens=8, temperature=1.0, seed=7)
    again = generate(ours, None, prompts, max_new_tokens=8, temperature=1.0, seed=7)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    alone = generate(ours, None, prompts[1], max_new_tokens=8, temperature=1.0, seed=7)
    assert alone.token_ids == first[1].token_ids


def test_cli_generates_from_a_marian_directory_with_prompt_ids(marian, capsys):
    """No sentencepiece reader: the source goes in as ids and the output comes out as ids."""
    from llm_internals.cli import main

    hf, _, path = marian
    prompts = sources(4, seed=2)
    for prompt, expected in zip(prompts, hf_greedy(hf, prompts), strict=True):
        ids = ",".join(map(str, prompt))
        args = ["--prompt-ids", ids, "--temperature", "0", "--max-new-tokens", str(MAX_NEW)]
        assert main(["generate", "--model", str(path), *args]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [str(t) for t in prompt]
        assert lines[1].split() == [str(t) for t in expected]


def test_cli_without_a_marian_tokenizer_asks_for_prompt_ids(marian, capsys):
    from llm_internals.cli import main

    _, _, path = marian
    assert main(["generate", "--model", str(path), "--prompt", "Hello"]) != 0
    captured = capsys.readouterr()
    assert "tokenizer.json does not exist" in captured.out + captured.err
