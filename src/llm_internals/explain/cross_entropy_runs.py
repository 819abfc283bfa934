"""The runs of the `cross-entropy` lesson: the library's `cross_entropy` on one example under a
recorder, a bigram language model of a short text (add-one counts as logits), and the figure of
the lessons' trained model's recorded loss curve.
"""

from __future__ import annotations

import torch

from llm_internals.explain.figures import line_figure
from llm_internals.explain.lesson_model import curve_series
from llm_internals.trace import Recording, recording
from llm_internals.training.loss import cross_entropy


def categorical_run(
    logits: list[float], target: int
) -> tuple[torch.Tensor, Recording, torch.Tensor]:
    """The example's logits, what `cross_entropy` recorded on them, and the loss."""
    logits = torch.tensor([logits], dtype=torch.float64)
    target = torch.tensor([target])
    with recording() as rec:
        loss = cross_entropy(logits, target)
    return logits, rec, loss


def bigram_logits(text: str) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """A real (if tiny) language model: add-one bigram counts of `text`, as logits log(count);
    returns the vocabulary, the ids, the logits at each position and the next ids."""
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(ch) for ch in text])
    counts = torch.ones(len(vocab), len(vocab), dtype=torch.float64)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True):
        counts[a, b] += 1
    return vocab, ids, torch.log(counts[ids[:-1]]), ids[1:]


def training_curve_figure(record: dict):
    """The loss curve of the lessons' shipped model, from its training record (training.json)."""
    series = curve_series(record["curve"])
    steps = [s for s, _ in series.values()]
    return line_figure(
        "cross_entropy", "training",
        f"Cross-entropy while training the lessons' model ({record['parameters']:,} parameters, "
        f"{record['vocab_size']:,} BPE tokens, seed {record['seed']}): from ln(V) = "
        f"{record['uniform_loss']:.2f} nats, a uniform guess, down to "
        f"{series['validation (evaluation)'][1][-1]:.2f} on random validation batches.",
        steps[0],
        {label: losses for label, (_, losses) in series.items()},
        "optimizer step", "cross-entropy (nats/token)", title="Training the lessons' model",
        xs={label: points for label, points in zip(series, steps, strict=True)},
    )  # fmt: skip
