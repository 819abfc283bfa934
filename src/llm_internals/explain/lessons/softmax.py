"""Lesson "softmax": why subtract the max, -inf vs -1e9 masks, and temperature.

Every number comes from `llm_internals.layers.softmax.softmax` run under a recorder; the naive
formula is evaluated only to show the failure the library avoids.
"""

from __future__ import annotations

import torch

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.softmax import softmax
from llm_internals.trace import recording

INFO = LessonInfo(
    name="softmax",
    title="Softmax: from scores to probabilities, safely",
    summary="Why we subtract the max, what -inf and -1e9 masks do, and what temperature changes.",
)

LOGITS = [2.0, 1.0, 0.1]
HUGE_LOGITS = [1000.0, 999.0, 998.0]
MASKED_ROW = [2.0, 1.0, float("-inf"), float("-inf")]
TEMPERATURES = [0.5, 1.0, 2.0]
INPUTS = (
    LessonInput(
        "temperature",
        "temperature T",
        1.0,
        kind="float",
        minimum=0.01,
        maximum=100.0,
        help="divides the logits before softmax; added to the table's 0.5, 1 and 2",
    ),
)


def entropy_bits(probs: torch.Tensor) -> float:
    """Shannon entropy in bits, with 0 * log 0 taken as 0."""
    nonzero = probs[probs > 0]
    return float(-(nonzero * torch.log2(nonzero)).sum())


def _section_basics() -> Section:
    logits = torch.tensor(LOGITS)
    with recording() as rec:
        softmax(logits)
    return Section(
        "What softmax does",
        [
            Step(
                "A model produces one real number per choice (a logit). Softmax turns them into "
                "probabilities: exponentiate so every value is positive, then divide by the total "
                "so they sum to 1. Larger logits get exponentially more of the mass.",
                formula="softmax(x)_i = exp(x_i) / sum_j exp(x_j)",
                values={"logits x": logits},
            ),
            Step(
                "The library first subtracts the row maximum (next section explains why), then "
                "exponentiates and normalizes.",
                formula="softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x))",
                values={
                    "max(x)": rec.get("max"),
                    "x - max(x)": rec.get("shifted"),
                    "exp(x - max(x))": rec.get("exp"),
                    "sum": rec.get("sum"),
                    "probabilities": rec.get("probs"),
                },
            ),
        ],
    )


def _section_overflow() -> Section:
    huge = torch.tensor(HUGE_LOGITS)
    naive_exp = torch.exp(huge)
    naive = naive_exp / naive_exp.sum()
    with recording() as rec:
        safe = softmax(huge)
    return Section(
        "Why subtract the max",
        [
            Step(
                "exp overflows quickly: the largest float32 is about 3.4e38, and exp(89) is "
                "already beyond it. Logits of 1000 are not unusual in a badly scaled model.",
                formula="exp(1000) = inf (float32 and float64 alike)",
                values={"logits x": huge, "exp(x) in float32": naive_exp},
            ),
            Step(
                "The naive formula then computes inf / inf, which is NaN: the probabilities are "
                "lost.",
                values={"naive exp(x) / sum exp(x)": naive},
            ),
            Step(
                "Subtracting the max multiplies numerator and denominator by the same exp(-max), "
                "so the result is unchanged, but now the largest exponent is exp(0) = 1. The "
                "answer equals softmax([2, 1, 0]): only differences between logits matter.",
                values={
                    "x - max(x)": rec.get("shifted"),
                    "exp(x - max(x))": rec.get("exp"),
                    "softmax(x)": safe,
                },
            ),
        ],
    )


def _section_masking() -> Section:
    row = torch.tensor(MASKED_ROW)
    fully_inf = torch.full((4,), float("-inf"))
    fully_big = torch.full((4,), -1e9)
    return Section(
        "Masking: -inf or -1e9?",
        [
            Step(
                "Attention hides positions (the future, or padding) by setting their scores to "
                "-inf before softmax: exp(-inf) = 0, so they get exactly zero weight.",
                values={"scores with two masked": row, "softmax": softmax(row)},
            ),
            Step(
                "A row where every position is masked (e.g. a padding query that may see "
                "nothing) is a problem: max is -inf, x - max is -inf - (-inf) = NaN. "
                "torch.softmax returns NaN, and one NaN spreads through every later layer.",
                values={
                    "fully masked row (-inf)": fully_inf,
                    "torch.softmax": fully_inf.softmax(-1),
                },
            ),
            Step(
                "Many implementations mask with a large finite negative number such as -1e9 (or "
                "the dtype's minimum) instead. That avoids NaN, but a fully masked row then "
                "becomes uniform: the query attends equally to positions it must not see.",
                values={"fully masked row (-1e9)": fully_big, "softmax": softmax(fully_big)},
            ),
            Step(
                "This library keeps -inf (exact zeros for masked positions) and treats a row with "
                "nothing visible as having zero total mass: it returns all zeros, so that query's "
                "attention output is a zero vector rather than NaN or an average of padding.",
                values={"llm_internals softmax(-inf row)": softmax(fully_inf)},
            ),
        ],
    )


def _section_temperature(temperature: float = 1.0) -> Section:
    logits = torch.tensor(LOGITS)
    rows = []
    for t in sorted({*TEMPERATURES, temperature}):
        probs = softmax(logits, temperature=t)
        rows.append([t, *probs.tolist(), entropy_bits(probs)])
    return Section(
        "Temperature",
        [
            Step(
                "Dividing logits by a temperature T before softmax sharpens (T < 1) or flattens "
                "(T > 1) the distribution. As T -> 0 it approaches argmax (greedy decoding); as "
                "T grows it approaches uniform (maximum entropy, log2(3) = 1.585 bits here).",
                formula="softmax(x / T)",
                values={
                    "logits": logits,
                    "softmax(logits / T)": softmax(logits, temperature=temperature),
                    "probabilities by temperature": Table(
                        ["T", "p0", "p1", "p2", "entropy (bits)"], rows
                    ),
                },
            )
        ],
    )


def build(temperature: float = 1.0) -> Lesson:
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_basics(),
            _section_overflow(),
            _section_masking(),
            _section_temperature(temperature),
        ],
    )
