"""The distributions and sampler runs of the `sampling` lesson: next-character counts of the
Shakespeare corpus as logits (a count-based language model), the real `Sampler` run once
(seeded) with what it recorded, the kept-set table, and the lessons' trained model's
next-token logits after one prompt.
"""

from __future__ import annotations

import math
import re

import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lesson_model import load_lesson_model
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, make_generator
from llm_internals.trace import recording

SEED = 0
TRAINED_PROMPT = "To be, or not to"


def vocabulary(text: str) -> list[str]:
    """Every distinct character of the corpus, sorted: token id = position in this list."""
    return sorted(set(text))


def next_char_logits(text: str, vocab: list[str], context: str) -> tuple[torch.Tensor, list[int]]:
    """ln(count of c after `context`) for each vocabulary character c (-inf when never seen)."""
    counts = [0] * len(vocab)
    index = {ch: i for i, ch in enumerate(vocab)}
    for match in re.finditer(re.escape(context) + "(.)", text, flags=re.S):
        counts[index[match.group(1)]] += 1
    logits = torch.tensor([math.log(c) if c else -math.inf for c in counts])
    return logits, counts


def show(ch: str) -> str:
    """A character as a reader can see it: space, newline and quotes made visible."""
    return {" ": "' ' (space)", "\n": "'\\n'"}.get(ch, repr(ch))


def run_sampler(logits: torch.Tensor, **params) -> tuple[int, dict[str, torch.Tensor]]:
    """Sample once with the real Sampler (seeded) and return the token and what it recorded."""
    params = SamplingParams(seed=SEED, **params)
    with recording() as rec:
        tokens = Sampler()(logits[None], [params], generators=[make_generator(params.seed)])
    values = {name: rec.get(name) for name in rec.names() if name.startswith("sampling.")}
    return int(tokens[0]), values


class CharDistribution:
    """The next-character distribution after `context` in `text`: logits ln(count), counts,
    and the characters seen after it (most frequent first), with table rows over them."""

    def __init__(self, text: str, vocab: list[str], context: str) -> None:
        self.vocab = vocab
        self.context = context
        self.logits, self.counts = next_char_logits(text, vocab, context)
        # Candidates: every character seen after the context, most frequent first.
        self.candidates = sorted(
            (i for i, c in enumerate(self.counts) if c), key=lambda i: (-self.counts[i], i)
        )

    def rows(self, *columns: torch.Tensor) -> list[list]:
        return [[show(self.vocab[i]), *(float(col[i]) for col in columns)] for i in self.candidates]


def kept_table(dist: CharDistribution, probs: torch.Tensor, rec: dict, extra=()) -> Table:
    """Each candidate's probability (and `extra` columns), whether the sampler kept it, and
    its renormalized probability, as the real Sampler recorded them."""
    kept = rec["sampling.kept"][0]
    renormalized = rec["sampling.probs"][0]
    names = [name for name, _ in extra]
    rows = []
    for i in dist.candidates:
        rows.append(
            [show(dist.vocab[i]), float(probs[i]), *(float(col[i]) for _, col in extra),
             bool(kept[i]), float(renormalized[i])]
        )  # fmt: skip
    return Table(["next character", "probability", *names, "kept", "renormalized"], rows)


def trained_next_token_logits() -> tuple[list[int], torch.Tensor]:
    """(prompt ids, next-token logits) of the lessons' trained model after TRAINED_PROMPT."""
    model, tokenizer = load_lesson_model()
    ids = tokenizer.encode_ordinary(TRAINED_PROMPT)
    with torch.no_grad():
        return ids, model(torch.tensor([ids]))[0, -1]
