"""Lesson "cross-entropy": the loss every language model is trained on, from -log p to perplexity.

Every number comes from `llm_internals.training.loss` run under a recorder (autograd appears
once, as the reference the gradient is checked against).
"""

from __future__ import annotations

import math

import torch

from llm_internals.explain.cross_entropy_runs import (
    bigram_logits,
    categorical_run,
    training_curve_figure,
)
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_model import lesson_model_training
from llm_internals.explain.registry import LessonInfo
from llm_internals.trace import Recording, recording
from llm_internals.training.loss import (
    binary_cross_entropy,
    bits_per_byte,
    cross_entropy,
    cross_entropy_grad,
    perplexity,
)

INFO = LessonInfo(
    name="cross-entropy",
    title="Cross-entropy: the loss a language model minimizes",
    summary="Why -log p, binary and categorical forms, a stable computation, perplexity and "
    "bits per byte, and the gradient softmax - onehot.",
)

CLASSES = ["cat", "dog", "fish", "bird"]
LOGITS = [2.0, 1.0, 0.1, -1.0]
TARGET = 0  # "cat"
PROBABILITIES = [0.99, 0.9, 0.5, 0.1, 0.01]
BINARY_PROBS = [0.9, 0.6, 0.2, 0.05]
BINARY_TARGETS = [1.0, 1.0, 0.0, 1.0]
TEXT = "abracadabra"


def _section_big_picture() -> Section:
    return Section(
        "The big picture",
        [
            Step(
                "A language model reads some text and outputs a probability for every possible "
                "next token. Training needs one number that says how good those probabilities "
                "were, given the token that actually came next. Cross-entropy is that number: "
                "minus the log of the probability the model gave to the right answer. Lower is "
                "better; 0 would mean the model was certain and right."
            )
        ],
    )


def _section_what_it_is() -> Section:
    return Section(
        "What cross-entropy is",
        [
            Step(
                "Cross-entropy compares a true distribution q with a predicted one p: the average "
                "surprise -log p_j when outcomes are drawn from q. For next-token prediction q "
                "is one-hot (the token that came next, y), so the sum keeps a single term.",
                formula="H(q, p) = -sum_j q_j log p_j;   with q = onehot(y):  H = -log p_y",
            )
        ],
    )


def _section_formula() -> Section:
    return Section(
        "The formula",
        [
            Step(
                "A model outputs logits z (any real numbers), not probabilities. Softmax turns "
                "them into p, and the log of a softmax simplifies: log p_j = z_j - logsumexp(z). "
                "logsumexp is computed after subtracting the maximum m, so no exp overflows.",
                formula="loss = -log p_y = logsumexp(z) - z_y,   "
                "logsumexp(z) = m + log sum_j exp(z_j - m)",
            ),
            Step(
                "Over a batch the loss is the mean over positions. Positions whose target equals "
                "ignore_index (padding) are left out of both the sum and the count. Label "
                "smoothing eps mixes the one-hot target with a uniform one.",
                formula="loss = (1/N) sum_{i: y_i != ignore} [(1 - eps)(-log p_{y_i}) + "
                "eps mean_j(-log p_j)]",
            ),
        ],
    )


def _section_why_negative_log() -> Section:
    rows = []
    for p in PROBABILITIES:
        with recording() as rec:
            # a two-class prediction whose right-answer probability is p
            cross_entropy(torch.tensor([[math.log(p), math.log(1 - p)]], dtype=torch.float64),
                          torch.tensor([0]))  # fmt: skip
        rows.append([p, float(rec.get("loss")), float(-math.log2(p))])
    return Section(
        "Why the negative log",
        [
            Step(
                "-log p is 0 when the model gave the right answer probability 1 and grows without "
                "bound as that probability goes to 0: being confidently wrong costs the most. "
                "Logs also turn the probability of a whole text (a product over tokens) into a "
                "sum, and maximizing that probability into minimizing a mean loss. In base 2 the "
                "loss is the number of bits an ideal coder using p would spend on the answer.",
                formula="-log(p_1 p_2 ... p_N) = sum_i -log p_i",
                values={
                    "loss for the right answer's probability p": Table(
                        ["p", "-ln p (nats)", "-log2 p (bits)"], rows
                    )
                },
            )
        ],
    )


def _section_binary() -> Section:
    probs = torch.tensor(BINARY_PROBS, dtype=torch.float64)
    targets = torch.tensor(BINARY_TARGETS, dtype=torch.float64)
    with recording() as rec:
        loss = binary_cross_entropy(probs, targets)
    return Section(
        "Binary cross-entropy",
        [
            Step(
                "With two outcomes (spam or not, a pixel on or off) the model outputs one "
                "probability p of the positive class; the other is 1 - p. The loss picks the "
                "log of whichever one was right. The third example is a correct 'no', the last a "
                "confident miss, which dominates the mean.",
                formula="BCE(p, y) = -(y log p + (1 - y) log(1 - p))",
                values={
                    "p": probs,
                    "y": targets,
                    "per-example loss": rec.get("losses"),
                    "mean loss": float(loss),
                },
            )
        ],
    )


def _section_categorical(logits: torch.Tensor, rec: Recording) -> Section:
    probs = torch.exp(rec.get("log_probs"))
    return Section(
        "Categorical cross-entropy",
        [
            Step(
                f"With V classes the model outputs V logits. Here an image classifier scores "
                f"{', '.join(CLASSES)}; the right answer is '{CLASSES[TARGET]}'. The loss only "
                "looks at the probability of the right class, but that probability depends on "
                "every logit through softmax's denominator.",
                values={
                    "classes": Table(["index", "class"], [[i, c] for i, c in enumerate(CLASSES)]),
                    "logits z": logits[0],
                    "p = softmax(z)": probs[0],
                    "target y": TARGET,
                },
            )
        ],
    )


def _section_numeric_example(rec: Recording, loss: torch.Tensor) -> Section:
    probs = torch.exp(rec.get("log_probs"))
    return Section(
        "A step-by-step numeric example",
        [
            Step(
                "1. Subtract the maximum logit so the largest exponent is exp(0) = 1.",
                values={"m = max(z)": rec.get("max")[0, 0], "z - m": rec.get("shifted")[0]},
            ),
            Step(
                "2. logsumexp: m plus the log of the sum of the shifted exponentials.",
                formula="logsumexp(z) = m + log sum_j exp(z_j - m)",
                values={"logsumexp(z)": rec.get("logsumexp")[0, 0]},
            ),
            Step(
                "3. Log-probabilities: every logit minus logsumexp.",
                formula="log p_j = z_j - logsumexp(z)",
                values={"log p": rec.get("log_probs")[0]},
            ),
            Step(
                "4. The loss is minus the log-probability of the target.",
                formula=f"loss = -log p_{TARGET}",
                values={
                    "loss": float(loss),
                    "check: -log softmax(z)[y]": float(-torch.log(probs[0, TARGET])),
                },
            ),
        ],
    )


def training_curve_step() -> Step:
    """The loss curve of the lessons' shipped model (recorded in its training.json)."""
    record = lesson_model_training()
    figure = training_curve_figure(record)
    return Step(
        "Training is minimizing exactly this mean cross-entropy, batch after batch. The "
        "lessons' small trained model started at ln(V), the loss of a uniform guess over its "
        f"{record['vocab_size']:,} tokens, and ended at the validation loss below (measured on "
        "held-out text it never trained on; scripts/train_lesson_model.py, "
        f"`{record['command']}`).",
        formula="loss = -(1/N) sum_t log p(x_t+1 | x_1..x_t)",
        values={
            "uniform guess ln(V)": record["uniform_loss"],
            "validation loss after training": record["val_loss"],
            "validation perplexity": math.exp(record["val_loss"]),
            "optimizer steps": record["steps"],
        },
        figures=[figure],
    )


def _section_language_models() -> Section:
    vocab, ids, logits, targets = bigram_logits(TEXT)
    with recording() as rec:
        loss = cross_entropy(logits, targets)
    uniform = cross_entropy(torch.zeros_like(logits), targets)
    rows = [[TEXT[i], TEXT[i + 1], float(rec.get("target_nll")[i])] for i in range(len(TEXT) - 1)]
    return Section(
        "Cross-entropy for language models",
        [
            Step(
                f"A language model makes one prediction per position: after each character of "
                f"'{TEXT}' it scores the {len(vocab)} possible next characters. The model here is "
                "a bigram table (logits = log of add-one counts of which character follows "
                "which). The training loss is the mean over all positions.",
                values={
                    "vocabulary": " ".join(vocab),
                    "logits (one row per position)": logits,
                    "loss per position": Table(["after", "next", "-log p(next)"], rows),
                    "mean loss (nats/token)": float(loss),
                },
            ),
            Step(
                "Perplexity exp(loss) is the number of equally likely choices that would be as "
                "surprising: a uniform guess over the vocabulary has perplexity V. Bits per byte "
                "divides total bits by the text's bytes, so models with different tokenizers can "
                "be compared (one character is one byte here, so it is loss / ln 2).",
                formula="perplexity = exp(loss);   bpb = loss * tokens / (bytes * ln 2)",
                values={
                    "perplexity (bigram)": perplexity(loss),
                    "perplexity (uniform)": perplexity(uniform),
                    "bits per byte (bigram)": bits_per_byte(loss, len(targets), len(targets)),
                },
            ),
            training_curve_step(),
        ],
    )


def _section_gradient() -> Section:
    logits = torch.tensor([LOGITS], dtype=torch.float64)
    target = torch.tensor([TARGET])
    with recording() as rec:
        grad = cross_entropy_grad(logits, target)
    leaf = logits.clone().requires_grad_(True)
    cross_entropy(leaf, target).backward()
    return Section(
        "Its gradient: softmax - onehot",
        [
            Step(
                "Differentiate loss = logsumexp(z) - z_y. The derivative of logsumexp with "
                "respect to z_j is exp(z_j) / sum_k exp(z_k) = p_j, and the derivative of z_y is "
                "1 for j = y and 0 otherwise.",
                formula="dloss/dz_j = p_j - [j = y]   i.e.   grad = softmax(z) - onehot(y)",
            ),
            Step(
                "So a gradient-descent step raises the right logit in proportion to 1 - p_y and "
                "lowers every other logit in proportion to its probability; the gradient is "
                "small when the model is already right and confident. Computed directly by the "
                "library, and checked against autograd:",
                values={
                    "softmax(z)": rec.get("probs")[0],
                    "onehot(y)": rec.get("target_distribution")[0],
                    "softmax - onehot": grad[0],
                    "autograd dloss/dz": leaf.grad[0],
                    "max |difference|": f"{float((grad - leaf.grad).abs().max()):.1e}",
                },
                decimals=6,
            ),
        ],
    )


def _section_summary() -> Section:
    return Section(
        "Summary",
        [
            Step(
                "Cross-entropy = -log(probability of what actually happened), averaged over "
                "positions (padding excluded). Compute it as logsumexp(z) - z_y with the max "
                "subtracted. Perplexity = exp(loss), bits per byte = total bits / bytes. Its "
                "gradient with respect to the logits is softmax(z) - onehot(y): the starting "
                "point of every backward pass through a language model."
            )
        ],
    )


def build() -> Lesson:
    logits, rec, loss = categorical_run(LOGITS, TARGET)
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_big_picture(),
            _section_what_it_is(),
            _section_formula(),
            _section_why_negative_log(),
            _section_binary(),
            _section_categorical(logits, rec),
            _section_numeric_example(rec, loss),
            _section_language_models(),
            _section_gradient(),
            _section_summary(),
        ],
    )
