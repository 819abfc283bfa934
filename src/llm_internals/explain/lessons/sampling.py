"""Lesson "sampling": greedy, temperature, top-k, top-p and min-p on one real distribution.

The distribution is real: how often each character follows " th" in the complete works of
Shakespeare, which is exactly the next-character distribution of a count-based (trigram)
language model of the corpus: logit = ln(count). Every kept set, renormalized probability and
draw is what `llm_internals.inference.sampling.Sampler` recorded while sampling from it.
"""

from __future__ import annotations

import torch

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_corpus import lesson_corpus
from llm_internals.explain.lesson_model import load_lesson_model
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.sampling_runs import (
    SEED,
    TRAINED_PROMPT,
    CharDistribution,
    kept_table,
    run_sampler,
    show,
    trained_next_token_logits,
    vocabulary,
)

INFO = LessonInfo(
    name="sampling",
    title="Sampling: choosing the next token",
    summary="Greedy, temperature, top-k, top-p and min-p on one real next-token distribution.",
)

CONTEXT = " th"  # peaked: 'e' dominates
FLAT_CONTEXT = "the "  # flat: the first letter of the next word
TEMPERATURES = (0.5, 1.0, 1.5)
TOP_K = 3
TOP_P = 0.85
MIN_P = 0.1
DRAW_TEMPERATURE = 0.8
INPUTS = (
    LessonInput("temperature", "temperature T", DRAW_TEMPERATURE, kind="float", minimum=0.05,
                maximum=10.0, help="of the final draw; also added to the temperature table"),
    LessonInput("top_k", "top-k k", TOP_K, minimum=1, maximum=100,
                help="how many of the most likely tokens top-k keeps"),
    LessonInput("top_p", "top-p p", TOP_P, kind="float", minimum=0.01, maximum=0.99,
                help="the probability mass top-p keeps (also used by the final draw)"),
    LessonInput("min_p", "min-p", MIN_P, kind="float", minimum=0.01, maximum=1.0,
                help="keep tokens with p >= min_p x the largest p"),
)  # fmt: skip


def _section_distribution(dist: CharDistribution) -> Section:
    _, rec = run_sampler(dist.logits)
    probs = rec["sampling.probs"][0]
    total = sum(dist.counts)
    table = Table(
        ["next character", "count", "logit = ln(count)", "probability"],
        [
            [show(dist.vocab[i]), dist.counts[i], float(dist.logits[i]), float(probs[i])]
            for i in dist.candidates
        ],
    )
    return Section(
        "One real next-token distribution",
        [
            Step(
                f"A language model ends each step with one logit per token of its vocabulary. "
                f"Ours: after the text {CONTEXT!r}, which character comes next in the complete "
                f"works of Shakespeare? Counting gives the model's answer directly (a trigram "
                f"model): logit = ln(count), so softmax turns logits back into count / total. "
                f"The vocabulary has {len(dist.vocab)} characters; {len(dist.candidates)} ever "
                f"follow {CONTEXT!r} (the others have logit -inf, probability 0).",
                formula="p(c | context) = softmax(logits)_c = count(c) / sum of counts",
                values={"occurrences of the context": total, "candidates": table},
            )
        ],
    )


def _section_greedy(dist: CharDistribution) -> Section:
    token, rec = run_sampler(dist.logits, temperature=0.0)
    return Section(
        "Greedy decoding",
        [
            Step(
                "Greedy decoding ignores the probabilities except for their order: it takes the "
                "most likely token every time. It is deterministic (temperature 0 in most "
                "APIs), good for short factual answers, and prone to loops in long text "
                "because the same context always gives the same continuation.",
                formula="token = argmax_c logits_c",
                values={
                    "greedy token": show(dist.vocab[token]),
                    "its logit": float(rec["sampling.logits"][0, token]),
                },
            )
        ],
    )


def _section_temperature(dist: CharDistribution, temperature: float) -> Section:
    # a temperature the learner chose joins the table's three
    changed = temperature != DRAW_TEMPERATURE
    temperatures = sorted({*TEMPERATURES, temperature}) if changed else list(TEMPERATURES)
    columns = [
        run_sampler(dist.logits, temperature=t)[1]["sampling.probs"][0] for t in temperatures
    ]
    table = Table(["next character", *(f"T = {t}" for t in temperatures)], dist.rows(*columns))
    return Section(
        "Temperature",
        [
            Step(
                "Sampling draws the next token at random with these probabilities, so rarer "
                "continuations appear in proportion. Temperature reshapes them first: logits "
                "are divided by T. T < 1 sharpens (the favourite gains), T > 1 flattens (rare "
                "characters gain). With logit = ln(count), softmax(logit / T) is count^(1/T), "
                "renormalized.",
                formula="p_T(c) = exp(z_c / T) / sum_j exp(z_j / T)",
                values={"probabilities by temperature": table},
            )
        ],
    )


def _section_top_k(dist: CharDistribution, top_k: int) -> Section:
    probs = torch.softmax(dist.logits, -1)
    _, rec = run_sampler(dist.logits, top_k=top_k)
    return Section(
        "Top-k",
        [
            Step(
                f"Top-k keeps the k most likely tokens and sets every other logit to -inf, so "
                f"the long tail can never be drawn; softmax then renormalizes over the "
                f"survivors. Here k = {top_k}. The weakness: k is fixed, whether the model is "
                f"sure (one good option) or unsure (dozens).",
                formula="keep c if z_c >= (k-th largest logit); p'(c) = p(c) / sum_kept p",
                values={
                    "k-th largest logit": float(rec["sampling.top_k_threshold"][0, 0]),
                    "top-k": kept_table(dist, probs, rec),
                },
            )
        ],
    )


def _section_top_p(dist: CharDistribution, top_p: float) -> Section:
    probs = torch.softmax(dist.logits, -1)
    _, rec = run_sampler(dist.logits, top_p=top_p)
    mass_before = rec["sampling.top_p_mass_before"][0]
    before = torch.zeros_like(probs)
    before[rec["sampling.top_p_order"][0]] = mass_before
    return Section(
        "Top-p (nucleus)",
        [
            Step(
                f"Top-p keeps the smallest set of most likely tokens whose probabilities add up "
                f"to at least p (Holtzman et al., 2019). Walk down the sorted list and keep a "
                f"token while the mass already kept is below p = {top_p}. A confident "
                f"distribution keeps few tokens, a flat one many.",
                formula="keep c if (sum of p over tokens ranked above c) < p",
                values={"top-p": kept_table(dist, probs, rec, [("mass before", before)])},
            )
        ],
    )


def _section_min_p(
    dist: CharDistribution, flat: CharDistribution, top_k: int, top_p: float, min_p: float
) -> Section:
    probs = torch.softmax(dist.logits, -1)
    _, rec = run_sampler(dist.logits, min_p=min_p)
    comparison = []
    for d in (dist, flat):
        sizes = [
            int(run_sampler(d.logits, **setting)[1]["sampling.kept"][0].sum())
            for setting in ({"top_k": top_k}, {"top_p": top_p}, {"min_p": min_p})
        ]
        comparison.append([repr(d.context), len(d.candidates), *sizes])
    return Section(
        "Min-p",
        [
            Step(
                f"Min-p keeps tokens whose probability is at least min_p times that of the most "
                f"likely token (here min_p = {min_p}). The bar rises when the model is "
                f"confident and falls when it is not, without summing a sorted list.",
                formula="keep c if p(c) >= min_p * max_j p(j)",
                values={
                    "threshold = min_p * max p": float(rec["sampling.min_p_threshold"][0, 0]),
                    "min-p": kept_table(dist, probs, rec),
                },
            ),
            Step(
                f"The same three settings on a flat distribution, the character after "
                f"{FLAT_CONTEXT!r} (the first letter of a word): top-k still keeps {top_k}, "
                f"while top-p and min-p widen to fit the uncertainty.",
                values={
                    "tokens kept": Table(
                        [
                            "context",
                            "candidates",
                            f"top-k {top_k}",
                            f"top-p {top_p}",
                            f"min-p {min_p}",
                        ],
                        comparison,
                    )
                },  # fmt: skip
            ),
        ],
    )


def _section_draw(dist: CharDistribution, temperature: float, top_p: float) -> Section:
    token, rec = run_sampler(dist.logits, temperature=temperature, top_p=top_p)
    probs = rec["sampling.probs"][0]
    cumulative = rec["sampling.cdf"][0]
    rows = [
        [show(dist.vocab[i]), float(probs[i]), float(cumulative[i])]
        for i in range(len(dist.vocab))
        if probs[i] > 0
    ]
    return Section(
        "Drawing the token",
        [
            Step(
                f"The sampler draws one number u uniformly from [0, 1) with the request's own "
                f"generator (seed {SEED}: same seed, same text) and walks the cumulative "
                f"probabilities in vocabulary order until they exceed u. Each token is hit "
                f"with exactly its probability. Here: temperature {temperature:g}, then top-p "
                f"{top_p:g}.",
                formula="token = first c with cumulative(c) > u",
                values={
                    "u": float(rec["sampling.uniforms"][0]),
                    "kept tokens in vocabulary order": Table(
                        ["next character", "probability", "cumulative"], rows
                    ),
                    "sampled token": show(dist.vocab[token]),
                },
            )
        ],
    )


TRAINED_TOP = 10  # the most likely next tokens shown


def _section_trained_model(temperature: float, top_p: float) -> Section:
    _, tokenizer = load_lesson_model()
    _, logits = trained_next_token_logits()
    token, rec = run_sampler(logits, temperature=temperature, top_p=top_p)
    plain = torch.softmax(logits, -1)
    shaped = rec["sampling.probs"][0]
    top = torch.topk(plain, TRAINED_TOP).indices.tolist()
    rows = [[repr(tokenizer.decode([i])), float(logits[i]), float(plain[i]), float(shaped[i])]
            for i in top]  # fmt: skip
    return Section(
        "A trained model's distribution",
        [
            Step(
                f"The same sampler on a neural model's logits: the lessons' small trained model "
                f"(BPE vocabulary of {tokenizer.vocab_size:,} tokens, trained on Shakespeare) "
                f"after '{TRAINED_PROMPT}'. Its {TRAINED_TOP} most likely next tokens, with "
                f"their probability at temperature 1 and after temperature {temperature:g} "
                f"and top-p {top_p:g}.",
                values={
                    "most likely next tokens": Table(
                        ["next token", "logit", "p (T = 1)", f"p (T = {temperature:g}, "
                         f"top-p {top_p:g})"], rows,
                    ),
                    "mass of these tokens (T = 1)": float(plain[top].sum()),
                    "sampled token": repr(tokenizer.decode([token])),
                },
                decimals=3,
            )
        ],
    )  # fmt: skip


def build(
    temperature: float = DRAW_TEMPERATURE,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    min_p: float = MIN_P,
) -> Lesson:
    text = lesson_corpus(INFO.name)
    vocab = vocabulary(text)
    dist = CharDistribution(text, vocab, CONTEXT)
    flat = CharDistribution(text, vocab, FLAT_CONTEXT)
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_distribution(dist),
            _section_greedy(dist),
            _section_temperature(dist, temperature),
            _section_top_k(dist, top_k),
            _section_top_p(dist, top_p),
            _section_min_p(dist, flat, top_k, top_p, min_p),
            _section_draw(dist, temperature, top_p),
            _section_trained_model(temperature, top_p),
        ],
    )
