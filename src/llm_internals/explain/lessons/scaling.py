"""Lesson "scaling": why attention divides scores by sqrt(d_k).

Random queries and keys with unit-variance entries (what a well-initialized layer produces) go
through the library's `scaled_dot_product_attention` three times per head size: unscaled
(scale = 1), scaled by 1/sqrt(d_k) (the default) and over-scaled by 1/d_k. The statistics in the
tables are computed from what the function recorded.
"""

from __future__ import annotations

import math

import torch

from llm_internals.explain.figures import line_figure
from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.attention import scaled_dot_product_attention
from llm_internals.trace import recording

INFO = LessonInfo(
    name="scaling",
    title="Why divide by sqrt(d_k)?",
    summary="Dot products grow with d_k; unscaled scores saturate softmax; sqrt(d_k) restores "
    "unit variance.",
)

HEAD_SIZES = (4, 64, 512)
ROWS = 1024  # independent queries
KEYS = 16  # keys per query: a uniform row has entropy log2(16) = 4 bits
SEED = 0
MAX_D_K = 1024  # q, k, v of ROWS x KEYS x d_k floats: 64 MiB each at the maximum
INPUTS = (
    LessonInput(
        "d_k",
        "head size d_k",
        64,
        minimum=1,
        maximum=MAX_D_K,
        help="the query/key width of the worked example; the tables add it to 4, 64 and 512",
    ),
)


def samples(d_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (ROWS, 1, 1, d_k), k and v (ROWS, 1, KEYS, d_k) with i.i.d. N(0, 1) entries."""
    generator = torch.Generator().manual_seed(SEED + d_k)
    q = torch.randn(ROWS, 1, 1, d_k, generator=generator)
    k = torch.randn(ROWS, 1, KEYS, d_k, generator=generator)
    v = torch.randn(ROWS, 1, KEYS, d_k, generator=generator)
    return q, k, v


def attend(d_k: int, scale: float) -> dict[str, torch.Tensor]:
    """Run the library's attention on the samples; return its recorded scores and weights."""
    q, k, v = samples(d_k)
    with recording() as rec:
        scaled_dot_product_attention(q, k, v, scale=scale)
    return {
        "scores": rec.get("scores").flatten(0, 2),  # (ROWS, KEYS)
        "scaled": rec.get("scaled_scores").flatten(0, 2),
        "weights": rec.get("weights").flatten(0, 2),
        "output": rec.get("output").flatten(0, 2),  # (ROWS, d_k)
    }


def entropy_bits(weights: torch.Tensor) -> torch.Tensor:
    """Per-row entropy in bits (0 log 0 = 0)."""
    logs = torch.where(weights > 0, torch.log2(weights), torch.zeros_like(weights))
    return -(weights * logs).sum(dim=-1)


def statistics(
    head_sizes: tuple[int, ...] = HEAD_SIZES,
) -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """For each d_k (ascending): the recordings with no scaling, 1/sqrt(d_k) and 1/d_k."""
    return {
        d: {
            "none": attend(d, 1.0),
            "sqrt": attend(d, 1.0 / math.sqrt(d)),
            "linear": attend(d, 1.0 / d),
        }
        for d in sorted(head_sizes)
    }


FIGURE_HEAD_SIZES = (1, 4, 16, 64, 256)
SCALINGS = {"unscaled": lambda d: 1.0, "1/sqrt(d_k)": lambda d: 1 / math.sqrt(d),
            "1/d_k": lambda d: 1 / d}  # fmt: skip


def saturation_curve() -> dict[str, list[float]]:
    """Mean max softmax weight at each head size of FIGURE_HEAD_SIZES, for each scaling."""
    return {
        label: [float(attend(d, scale(d))["weights"].max(dim=-1).values.mean())
                for d in FIGURE_HEAD_SIZES]
        for label, scale in SCALINGS.items()
    }  # fmt: skip


def saturation_figure():
    """The figure: how one-hot softmax gets as d_k grows, per scaling."""
    curve = saturation_curve()
    return line_figure(
        "scaling", "saturation",
        f"Mean max softmax weight over {ROWS} rows of {KEYS} keys: unscaled it climbs towards "
        f"1 (one-hot) as d_k grows; 1/sqrt(d_k) keeps it flat; 1/d_k falls to uniform (1/{KEYS}).",
        FIGURE_HEAD_SIZES, {**curve, f"uniform (1/{KEYS})": [1 / KEYS] * len(FIGURE_HEAD_SIZES)},
        "head size d_k", "mean max softmax weight", title="Softmax saturation vs d_k", logx=True,
    )  # fmt: skip


def _row(d: int, runs: dict[str, dict[str, torch.Tensor]], kind: str) -> list:
    weights = runs[kind]["weights"]
    return [
        d,
        float(runs[kind]["scaled"].var()),
        float(weights.max(dim=-1).values.mean()),
        float(entropy_bits(weights).mean()),
    ]


def _section_formula() -> Section:
    return Section(
        "The formula",
        [
            Step(
                "Attention divides the query-key dot products by sqrt(d_k), the size of one "
                "head, before the softmax. This lesson shows what goes wrong without it and "
                "why exactly sqrt(d_k).",
                formula="Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V",
            )
        ],
    )


def _section_without_scaling(stats) -> Section:
    big = HEAD_SIZES[-1]
    example = {kind: stats[big][kind] for kind in ("none", "sqrt")}
    return Section(
        "Without scaling",
        [
            Step(
                f"One query against {KEYS} keys with d_k = {big} and unit-variance entries. "
                "Unscaled, the scores spread over tens of units, and softmax puts almost all "
                "weight on the single largest score: the query copies one value vector and "
                "the gradient to every other key nearly vanishes.",
                values={
                    "scores (unscaled)": example["none"]["scaled"][0],
                    "weights (unscaled)": example["none"]["weights"][0],
                },
                decimals=3,
            ),
            Step(
                f"The same row divided by sqrt({big}) = {math.sqrt(big):.2f}: the weights "
                "are spread over several keys, and each receives gradient.",
                values={
                    "scores / sqrt(d_k)": example["sqrt"]["scaled"][0],
                    "weights (scaled)": example["sqrt"]["weights"][0],
                },
                decimals=3,
            ),
        ],
    )


def _section_dot_products_grow() -> Section:
    return Section(
        "Why dot products grow with d_k",
        [
            Step(
                "q . k adds d_k products q_i k_i. With independent entries of mean 0 and "
                "variance 1, each product has mean 0 and variance E[q_i^2] E[k_i^2] = 1, and "
                "variances of independent terms add.",
                formula="Var(q . k) = sum_i Var(q_i k_i) = d_k * 1 * 1 = d_k;  "
                "std(q . k) = sqrt(d_k)",
            )
        ],
    )


def _section_checking_var_q(stats) -> Section:
    return Section(
        "Checking Var(q . k) = d_k",
        [
            Step(
                f"Measured over {ROWS * KEYS:,} random query-key pairs per head size "
                "(the unscaled scores the function recorded).",
                values={
                    "variance of q . k": Table(
                        ["d_k", "derived Var = d_k", "measured Var", "measured / derived"],
                        [
                            [
                                d,
                                d,
                                float(stats[d]["none"]["scores"].var()),
                                float(stats[d]["none"]["scores"].var()) / d,
                            ]
                            for d in stats
                        ],
                    )
                },
                decimals=3,
            )
        ],
    )


def _section_large_scores_softmax(columns, stats) -> Section:
    return Section(
        "What large scores do to softmax",
        [
            Step(
                f"Averaged over {ROWS} rows of {KEYS} keys. Uniform weights would give max "
                f"weight 1/{KEYS} = {1 / KEYS:.4f} and entropy log2({KEYS}) = "
                f"{math.log2(KEYS):.0f} bits; one-hot gives 1 and 0 bits. Unscaled, attention "
                "becomes more one-hot the larger the head.",
                values={
                    "unscaled": Table(columns, [_row(d, stats[d], "none") for d in stats]),
                    "scaled by 1/sqrt(d_k)": Table(
                        columns, [_row(d, stats[d], "sqrt") for d in stats]
                    ),
                },
                decimals=3,
                figures=[saturation_figure()],
            )
        ],
    )


def _section_sqrt_d_k(columns, stats) -> Section:
    return Section(
        "Why sqrt(d_k) is right",
        [
            Step(
                "Dividing a random variable by c divides its variance by c^2. Dividing by "
                "sqrt(d_k) brings Var(q . k) = d_k back to 1 for every head size, so softmax "
                "sees the same spread of scores whatever d_k is. Dividing by d_k "
                "over-corrects: the variance falls to 1/d_k and large heads attend almost "
                "uniformly.",
                formula="Var(q . k / sqrt(d_k)) = d_k / d_k = 1;   Var(q . k / d_k) = 1 / d_k",
                values={
                    "scaled by 1/d_k (too much)": Table(
                        columns, [_row(d, stats[d], "linear") for d in stats]
                    ),
                },
                decimals=3,
            )
        ],
    )


def _section_putting_it_together(stats, d: int) -> Section:
    run = stats[d]["sqrt"]
    return Section(
        "Putting it all together",
        [
            Step(
                f"One query through the whole of scaled dot-product attention with d_k = {d} "
                f"(a typical head size), as the library's function recorded it: {KEYS} raw "
                f"scores with spread about sqrt({d}) = {math.sqrt(d):.0f}, divided by "
                f"sqrt(d_k) to unit spread, a softmax that keeps several keys in play, and the "
                "output: the weighted average of the value vectors.",
                formula="scores = q K^T;  scaled = scores / sqrt(d_k);  "
                "weights = softmax(scaled);  output = weights V",
                values={
                    "1. scores = q . k": run["scores"][0],
                    "2. scaled = scores / sqrt(d_k)": run["scaled"][0],
                    "3. weights = softmax(scaled)": run["weights"][0],
                    "4. output = weights V": run["output"][0],
                    "std of all scaled scores": float(run["scaled"].std()),
                },
                decimals=3,
            )
        ],
    )


def build(d_k: int = 64) -> Lesson:
    """The lesson with the worked example at head size `d_k` (also added to the tables)."""
    stats = statistics((*HEAD_SIZES, d_k) if d_k not in HEAD_SIZES else HEAD_SIZES)
    columns = ["d_k", "var(score)", "mean max weight", "mean entropy (bits)"]
    sections = [
        _section_formula(),
        _section_without_scaling(stats),
        _section_dot_products_grow(),
        _section_checking_var_q(stats),
        _section_large_scores_softmax(columns, stats),
        _section_sqrt_d_k(columns, stats),
        _section_putting_it_together(stats, d_k),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
