"""The join of the two inference paths: the same requests through `generate` (contiguous cache)
and the serving engine (paged cache, one shared batch) give the same tokens, text and finish
reason for every cause: eos, ignore_eos, a stop id, a stop string split across tokens, length,
the context window, and seeded sampling with penalties. Both run one SequenceCore
(inference/sequence_core.py); these tests guard that they keep doing so."""

from __future__ import annotations

import pytest
import torch

from llm_internals.inference.generate import generate
from llm_internals.inference.paged.engine import LLM
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sequence_core import FINISH_REASONS
from llm_internals.inference.stopping import REPLACEMENT_CHAR, IncrementalDetokenizer
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

TEXT = "To be, or not to be, that is the question. " * 20 + "Whether 'tis nobler in the mind."
CONTEXT = 40


@pytest.fixture(scope="module")
def text_model():
    tok = train_bpe(TEXT, 300)
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=CONTEXT)  # fmt: skip
    return DecoderLM(config).double().eval(), tok


@pytest.fixture(scope="module")
def free_run(text_model):
    """Greedy tokens of the prompt with no stop rule at all (the cases are cut from them)."""
    model, tok = text_model
    return generate(model, tok, "To be", max_new_tokens=30, eos_token_id=None)


def split_stop_string(tok, prompt: str, ids: list[int]) -> tuple[str, int]:
    """A 2-character stop string whose characters come from the text of two different tokens
    of ids (so it is only found in the decoded text, never in one token), and the index of the
    token that completes it."""
    detokenizer = IncrementalDetokenizer(tok.decode, tok.encode(prompt))
    before = ""
    for i, token in enumerate(ids):
        piece = detokenizer.push(token)
        pair = before[-1:] + piece[:1]
        if len(pair) == 2 and REPLACEMENT_CHAR not in pair and pair not in before:
            return pair, i
        before += piece
    raise AssertionError("no token boundary to split a stop string over")


def cases(tok, free: list[int]) -> dict[str, tuple[object, SamplingParams, object, str]]:
    """name -> (prompt, params, eos id, expected finish reason)."""
    stop, _ = split_stop_string(tok, "To be", free)
    greedy = dict(temperature=0.0, max_tokens=30)
    long_prompt = [free[i % len(free)] for i in range(CONTEXT - 6)]
    return {
        "eos": ("To be", SamplingParams(**greedy), free[4], "eos"),
        "ignore_eos": (
            "To be",
            SamplingParams(**greedy | dict(max_tokens=12), ignore_eos=True),
            free[4],
            "length",
        ),  # fmt: skip
        "stop_id": ("To be", SamplingParams(**greedy, stop_token_ids=[free[6]]), None, "stop"),
        "stop_string": ("To be", SamplingParams(**greedy, stop=[stop]), None, "stop"),
        "length": ("To be", SamplingParams(temperature=0.0, max_tokens=9), None, "length"),
        "context": (long_prompt, SamplingParams(**greedy), None, "context"),
        "sampled": (
            "the question",
            SamplingParams(
                temperature=0.9,
                top_k=30,
                top_p=0.9,
                repetition_penalty=1.3,
                presence_penalty=0.5,
                frequency_penalty=0.3,
                seed=7,
                max_tokens=20,
            ),
            None,
            "length",
        ),  # fmt: skip
    }


def test_every_finish_reason_is_documented():
    assert set(FINISH_REASONS) == {"eos", "stop", "length", "context", "abort", "error"}


def test_generate_and_engine_agree_for_every_finish_reason(text_model, free_run):
    model, tok = text_model
    table = cases(tok, free_run.token_ids)
    # One engine per eos setting (eos is an engine option), all requests of it in one batch.
    by_eos: dict[object, list[str]] = {}
    for name, (_, _, eos, _) in table.items():
        by_eos.setdefault(eos, []).append(name)
    seen_reasons = set()
    for eos, names in by_eos.items():
        llm = LLM(model, tok, block_size=4, num_blocks=80, eos_token_id=eos)
        outputs = llm.generate([table[n][0] for n in names], [table[n][1] for n in names])
        for name, out in zip(names, outputs, strict=True):
            prompt, params, _, reason = table[name]
            ours = generate(model, tok, prompt, max_new_tokens=params.max_tokens, params=params,
                            eos_token_id=eos)  # fmt: skip
            assert (out.token_ids, out.text, out.finish_reason) == (
                ours.token_ids, ours.text, ours.finish_reason), name  # fmt: skip
            assert out.finish_reason == reason, name
            seen_reasons.add(reason)
    assert seen_reasons == {"eos", "stop", "length", "context"}


def test_the_cases_are_what_they_claim(text_model, free_run):
    """Guards the test above against vacuous cases: each cuts the free run where it should."""
    model, tok = text_model
    free = free_run.token_ids
    stop, last = split_stop_string(tok, "To be", free)
    llm = LLM(model, tok, block_size=4, num_blocks=80, eos_token_id=free[4])
    table = cases(tok, free)
    eos_out, ignoring = llm.generate(["To be", "To be"], [table["eos"][1], table["ignore_eos"][1]])
    assert eos_out.token_ids == free[:4]
    assert ignoring.token_ids == free[:12] and free[4] in ignoring.token_ids
    plain = LLM(model, tok, block_size=4, num_blocks=80, eos_token_id=None)
    stop_out = plain.generate("To be", table["stop_string"][1])[0]
    assert stop_out.text == free_run.text[: free_run.text.index(stop)]
    assert len(stop_out.token_ids) == last + 1  # up to the token that completed the stop string
    context_out = plain.generate(table["context"][0], table["context"][1])[0]
    assert len(table["context"][0]) + len(context_out.token_ids) == CONTEXT + 1
