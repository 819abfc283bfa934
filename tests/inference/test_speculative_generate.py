"""generate(..., draft_model= / ngram=): the same tokens as the target alone (greedy), the same
distribution (sampled: chi-square against the target's exact two-token distribution), stops
inside an accepted run, the context limit, seeds, and bad input.

The reference is plain `generate` with the target alone (itself checked against HF transformers
in test_generate.py) and, for sampling, the target's exact distribution P(t1) P(t2 | t1) from its
logits after the same sampling parameters. Models are tiny and float64 so greedy ties cannot
flip between a one-token step and a (g + 1)-token verify forward.
"""

from __future__ import annotations

import copy

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate, stream
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler
from llm_internals.inference.speculative.stats import SpeculativeStats
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

from .test_sampling_draws import chi2_critical_value, chi2_statistic

PROMPTS = [[5, 17, 9, 42, 8, 7, 61, 5, 17], [12, 4], [10, 33, 2, 9, 10, 33]]


def tiny(seed: int, layers: int = 2, vocab: int = 64, max_seq_len: int = 64, d_model: int = 32,
         **kw) -> DecoderLM:  # fmt: skip
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, d_model=d_model, n_layers=layers, n_heads=4,
                         n_kv_heads=2, max_seq_len=max_seq_len, **kw)  # fmt: skip
    return DecoderLM(config).double().eval()


@pytest.fixture(scope="module")
def models():
    target = tiny(0)
    noisy = copy.deepcopy(target)
    with torch.no_grad():
        for param in noisy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return {"target": target, "self": target, "noisy": noisy, "unrelated": tiny(1, layers=1)}


DRAFTS = [
    ("self", dict(draft_model="self")),
    ("noisy", dict(draft_model="noisy", num_speculative_tokens=3)),
    ("unrelated", dict(draft_model="unrelated", num_speculative_tokens=5)),
    ("ngram", dict(ngram=(1, 2))),
    ("adaptive", dict(draft_model="noisy", adaptive_gamma=True, num_speculative_tokens=6)),
]


def speculative_kwargs(models, kwargs):
    return {k: models[v] if k == "draft_model" else v for k, v in kwargs.items()}


@pytest.mark.parametrize(("name", "kwargs"), DRAFTS, ids=[d[0] for d in DRAFTS])
def test_greedy_equals_target_alone(models, name, kwargs):
    target = models["target"]
    spec = speculative_kwargs(models, kwargs)
    plain = generate(target, None, PROMPTS, max_new_tokens=24, eos_token_id=None)
    stats = SpeculativeStats()
    batch = generate(target, None, PROMPTS, max_new_tokens=24, eos_token_id=None,
                     speculative_stats=stats, **spec)  # fmt: skip
    assert [r.token_ids for r in batch] == [r.token_ids for r in plain]
    for prompt, expected in zip(PROMPTS, plain, strict=True):
        alone = generate(target, None, prompt, max_new_tokens=24, eos_token_id=None, **spec)
        assert alone.token_ids == expected.token_ids
    assert stats.tokens_emitted >= 3 * 24 and stats.rounds >= stats.target_forwards
    assert (stats.draft_forwards > 0) == ("draft_model" in kwargs)
    if name == "self":  # the draft is the target: every draft is accepted
        assert stats.accepted == stats.proposed > 0
        assert stats.tokens_per_target_forward > 4


def test_greedy_with_penalties_equals_target_alone(models):
    """Greedy rows with penalties take the argmax of the penalized logits, the drafts' included."""
    target = tiny(0, vocab=6, d_model=16)  # a small vocabulary: the penalties decide often
    prompts = [[1, 2, 3], [4, 5], [0, 1, 2, 3, 4]]
    params = SamplingParams(temperature=0.0, repetition_penalty=1.6, frequency_penalty=0.4)
    plain = generate(target, None, prompts, max_new_tokens=20, params=params)
    for spec in (dict(draft_model=target), dict(ngram=(1, 2))):
        result = generate(target, None, prompts, max_new_tokens=20, params=params, **spec)
        assert [r.token_ids for r in result] == [r.token_ids for r in plain], spec


def test_eos_inside_an_accepted_run_ends_there(models):
    target = models["target"]
    free = generate(target, None, PROMPTS, max_new_tokens=20, eos_token_id=None)
    eos = free[2].token_ids[6]  # row 2 meets it inside the accepted run of its second round
    plain = generate(target, None, PROMPTS, max_new_tokens=20, eos_token_id=eos)
    spec = generate(target, None, PROMPTS, max_new_tokens=20, eos_token_id=eos, draft_model=target)
    assert [(r.token_ids, r.finish_reason) for r in spec] == [
        (r.token_ids, r.finish_reason) for r in plain
    ]
    assert spec[2].finish_reason == "eos"
    chunks = list(stream(target, None, PROMPTS[2], max_new_tokens=20, eos_token_id=eos,
                         draft_model=target))  # fmt: skip
    assert [c.token_id for c in chunks[:-1]] == plain[2].token_ids
    assert chunks[-1].finish_reason == "eos"


def test_stop_string_and_max_tokens_inside_a_run():
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    tokenizer = train_bpe(text, 300)
    model = tiny(3, vocab=tokenizer.vocab_size, max_seq_len=96)
    prompt = "the cat sat on"
    free = generate(model, tokenizer, prompt, max_new_tokens=30, eos_token_id=None)
    stop = free.text[5:9]
    for kwargs in (dict(stop=[stop]), dict(stop_token_ids=[free.token_ids[7]]), {}):
        params = SamplingParams(temperature=0.0, **kwargs)
        plain = generate(model, tokenizer, prompt, max_new_tokens=13, params=params)
        assert plain.finish_reason == ("stop" if kwargs else "length")
        assert len(plain.token_ids) >= 2  # the stop falls inside a round, not at its start
        for spec in (dict(draft_model=model), dict(ngram=True)):
            result = generate(model, tokenizer, prompt, max_new_tokens=13, params=params, **spec)
            assert (result.token_ids, result.text, result.finish_reason) == (
                plain.token_ids, plain.text, plain.finish_reason
            )  # fmt: skip


def test_context_limit_clips_the_drafts(models):
    target = tiny(0, max_seq_len=16)
    draft = tiny(1, layers=1, max_seq_len=16)
    prompts = [PROMPTS[0], PROMPTS[1]]
    plain = generate(target, None, prompts, max_new_tokens=30, eos_token_id=None)
    spec = generate(target, None, prompts, max_new_tokens=30, eos_token_id=None,
                    draft_model=draft, num_speculative_tokens=8)  # fmt: skip
    assert [(r.token_ids, r.finish_reason) for r in spec] == [
        (r.token_ids, r.finish_reason) for r in plain
    ]
    assert {r.finish_reason for r in spec} == {"context"}


def exact_two_token_distribution(target, prompt, params, vocab):
    """P(t1, t2) = p(t1 | prompt) p(t2 | prompt, t1), each after the sampling parameters (the
    penalties of t2 see t1)."""
    sampler = Sampler()
    with torch.no_grad():
        first = target(torch.tensor([prompt]))[0, -1].float()
        _, p1 = sampler.distribution(first[None], [params], [prompt], [[]])
        nexts = target(torch.tensor([prompt + [t] for t in range(vocab)]))[:, -1].float()
        _, p2 = sampler.distribution(nexts, [params] * vocab, [prompt] * vocab,
                                     [[t] for t in range(vocab)])  # fmt: skip
    return (p1[0].double()[:, None] * p2.double()).flatten()


def pool_small_cells(counts, probs, minimum):
    """Chi-square needs >= 5 expected per cell: the least likely cells (probability > 0) are
    merged into one until it reaches `minimum`; the rest stay as they are."""
    order = [int(i) for i in probs.argsort() if probs[i] > 0]
    small, mass = [], 0.0
    while order and mass < minimum:
        small.append(order.pop(0))
        mass += float(probs[small[-1]])
    cells = [counts[order], counts[small].sum()[None]]
    return torch.cat(cells), torch.cat([probs[order], probs[small].sum()[None]])


SAMPLED = [
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8, min_p=0.05),
    dict(repetition_penalty=1.8, frequency_penalty=0.7, presence_penalty=0.5),
]


@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=1.3, top_k=5, top_p=0.9, min_p=0.05),
     dict(temperature=0.9, repetition_penalty=1.8, frequency_penalty=0.7, presence_penalty=0.5)],
    ids=["temperature,top-k,top-p,min-p", "penalties"],
)  # fmt: skip
def test_sampled_two_token_distribution_matches_target(sampling):
    vocab, draws = 6, 3000
    target = tiny(0, vocab=vocab, d_model=16)
    draft = tiny(5, layers=1, vocab=vocab, d_model=16)
    prompt = [1, 2, 3, 1, 2]  # repeats, so the n-gram proposer finds drafts too
    params = SamplingParams(**sampling)
    exact = exact_two_token_distribution(target, prompt, params, vocab)
    torch.manual_seed(11)  # the rows draw from torch's global generator
    for spec in (dict(draft_model=draft), dict(ngram=(1, 2))):
        stats = SpeculativeStats()
        results = generate(target, None, [prompt] * draws, max_new_tokens=2, eos_token_id=None,
                           params=params, num_speculative_tokens=2, speculative_stats=stats,
                           **spec)  # fmt: skip
        cells = torch.tensor([r.token_ids[0] * vocab + r.token_ids[1] for r in results])
        counts = torch.bincount(cells, minlength=vocab * vocab).double()
        assert counts[exact == 0].sum() == 0, "a token the target forbids was emitted"
        pooled, probs = pool_small_cells(counts, exact, 5 / draws)
        critical = chi2_critical_value(len(probs) - 1, 1e-3)
        assert chi2_statistic(pooled, probs) < critical, spec
        assert stats.proposed > 0 and 0 < stats.accepted < stats.proposed


@pytest.mark.parametrize("sampling", SAMPLED, ids=["top-k", "top-p,min-p", "penalties"])
def test_draft_equal_to_target_accepts_everything_under_sampling(models, sampling):
    """p == q when the draft is the target and the same sampling parameters (penalties seeing
    the drafts before each position) shape both: every draft is accepted."""
    target = tiny(0, vocab=6, d_model=16)  # a small vocabulary: drafts repeat tokens often
    stats = SpeculativeStats()
    generate(target, None, [[1, 2, 3], [4, 5], [0, 1, 2, 3, 4]], max_new_tokens=24,
             eos_token_id=None, draft_model=target, num_speculative_tokens=3,
             speculative_stats=stats, seed=4, **sampling)  # fmt: skip
    assert stats.proposed > 40 and stats.accepted == stats.proposed


def test_seeded_rows_reproduce_alone_and_in_a_batch(models):
    target, draft = models["target"], models["unrelated"]
    params = [SamplingParams(temperature=1.0, seed=s) for s in (1, 2, 3)]
    batch = generate(target, None, PROMPTS, max_new_tokens=12, params=params, draft_model=draft)
    again = generate(target, None, PROMPTS, max_new_tokens=12, params=params, draft_model=draft)
    alone = generate(target, None, PROMPTS[1], max_new_tokens=12, params=params[1],
                     draft_model=draft)  # fmt: skip
    assert [r.token_ids for r in batch] == [r.token_ids for r in again]
    assert alone.token_ids == batch[1].token_ids


def test_bad_input_errors(models):
    target = models["target"]
    other_vocab = tiny(2, vocab=80)
    short = tiny(2, max_seq_len=32)
    cases = [
        (dict(draft_model=other_vocab), "vocabulary"),
        (dict(draft_model=short), "context"),
        (dict(draft_model=target, num_speculative_tokens=0), "--num-speculative-tokens"),
        (dict(draft_model=target, ngram=True), "exactly one draft source"),
        (dict(ngram=(3, 2)), "--ngram-min"),
        (dict(ngram=True, use_cache=False), "--no-cache"),
        (dict(ngram=True, sliding_window=True), "--sliding-window"),
    ]
    for kwargs, match in cases:
        with pytest.raises(LLMInternalsError) as err:
            generate(target, None, PROMPTS[0], max_new_tokens=4, **kwargs)
        message = f"{err.value} {err.value.hint}"
        assert match in message, (kwargs, message)
