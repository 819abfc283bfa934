"""Lesson "causal-mask": a language model must not look at the tokens it is learning to predict.

A one-head `MultiHeadAttention` with readable weights attends over four tokens twice, without
and with `causal=True`; the masks are those of `llm_internals.layers.masks`. The "future leak"
is shown by changing the last token and watching which outputs change.
"""

from __future__ import annotations

import torch

from llm_internals.explain.figures import heatmap_figure
from llm_internals.explain.lesson import Lesson, Section, Step
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.masks import causal_mask, combine_masks, padding_mask
from llm_internals.layers.multihead import MultiHeadAttention
from llm_internals.trace import recording

INFO = LessonInfo(
    name="causal-mask",
    title="The causal mask: no peeking at the future",
    summary="What attention sees without a mask, how -inf above the diagonal hides the future, "
    "and the mask matrix itself.",
)

WORDS = ["the", "cat", "sat", "down"]
D_MODEL = 4
SEED = 1


def readable(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random values in [-1, 1] rounded to one decimal (no -0.0)."""
    return (torch.rand(shape, generator=generator) * 2 - 1).mul(10).round().div(10) + 0.0


def inputs() -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
    """The attention layer, the 4 token vectors, and a copy whose last token is different."""
    generator = torch.Generator().manual_seed(SEED)
    attention = MultiHeadAttention(D_MODEL, n_heads=1)
    with torch.no_grad():
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            proj.weight.copy_(readable((D_MODEL, D_MODEL), generator))
        attention.o_proj.weight.copy_(torch.eye(D_MODEL))
    x = readable((1, len(WORDS), D_MODEL), generator)
    changed = x.clone()
    changed[0, -1] = readable((D_MODEL,), generator)
    return attention, x, changed


def attend(attention: MultiHeadAttention, x: torch.Tensor, causal: bool) -> dict[str, torch.Tensor]:
    """One forward pass; the recorded steps of batch row 0, head 0."""
    with recording() as rec, torch.no_grad():
        attention(x, causal=causal)
    names = ["scaled_scores", "weights", "output"] + (["masked_scores"] if causal else [])
    return {name: rec.get(name)[0, 0] for name in names}


def changed_rows(a: torch.Tensor, b: torch.Tensor) -> str:
    """Which token positions got a different output."""
    rows = [WORDS[i] for i in range(a.shape[0]) if not torch.allclose(a[i], b[i], atol=1e-7)]
    return ", ".join(rows) if rows else "none"


def _section_without_masking_token(attention, x, changed) -> Section:
    open_run, open_changed = attend(attention, x, False), attend(attention, changed, False)
    return Section(
        "Without masking: a token sees the future",
        [
            Step(
                f"Plain self-attention over '{' '.join(WORDS)}': every row has weight on "
                "every column. Row 0 ('the') attends to 'cat', 'sat' and 'down', words that "
                "come after it. When training to predict the next word, the answer would be "
                "in plain view.",
                values={"weights (no mask)": open_run["weights"]},
            ),
            Step(
                "Proof by experiment: change only the last token's vector ('down') and run "
                "again. Every output changes, including the first token's, so the model at "
                "position 0 is reading position 3.",
                values={
                    "outputs that changed": changed_rows(
                        open_run["output"], open_changed["output"]
                    ),
                },
            ),
        ],
    )


def mask_figure(attention, x):
    """causal_mask(4) beside the weights without and with it, one heatmap each."""
    panels = {
        "causal_mask(4) (1 = may attend)": causal_mask(len(WORDS)).int(),
        "weights, no mask": attend(attention, x, False)["weights"],
        "weights, causal": attend(attention, x, True)["weights"],
    }
    return heatmap_figure(
        "causal_mask", "mask",
        "Rows are queries, columns keys. The mask keeps the lower triangle; without it the "
        "first tokens put weight on later ones, with it every weight above the diagonal is 0 "
        "and each row still sums to 1.",
        panels, WORDS, WORDS, vmin=0.0, vmax=1.0, annotate=True,
    )  # fmt: skip


def _section_masking(attention, x, changed) -> Section:
    masked_run, masked_changed = attend(attention, x, True), attend(attention, changed, True)
    return Section(
        "With masking",
        [
            Step(
                "With the causal mask every score above the diagonal (a key later than its "
                "query) is set to -inf before softmax, so its weight is exactly 0. Token i "
                "mixes only tokens 0..i, and each row still sums to 1.",
                values={
                    "masked scores": masked_run["masked_scores"],
                    "weights (causal)": masked_run["weights"],
                },
                figures=[mask_figure(attention, x)],
            ),
            Step(
                "The same experiment: changing the last token now changes only the last "
                "output. Training on all positions at once is safe: each position predicts "
                "its next token from the past alone, as it will have to at generation time.",
                values={
                    "outputs that changed": changed_rows(
                        masked_run["output"], masked_changed["output"]
                    ),
                },
            ),
        ],
    )


def _section_implementation(mask) -> Section:
    cached = causal_mask(2, 5)
    pad = padding_mask(torch.tensor([[0, 1, 1, 1]]))
    combined = combine_masks(mask, pad)[0, 0]
    return Section(
        "Implementation",
        [
            Step(
                "The library builds a boolean mask (True = may attend) by comparing indices, "
                "and fills disallowed scores with -inf in place before the softmax: "
                "`scores.masked_fill_(~mask, -inf)`. -inf rather than a large negative "
                "number gives exact zeros, and the library's softmax turns a row with no "
                "visible key into zeros instead of NaN.",
                formula="allowed_ij = (j <= i)",
            ),
            Step(
                "With a KV cache the queries are the last tokens of a longer sequence: 2 new "
                "queries against 5 keys. Query i sits at position i + (keys - queries), so "
                "the mask is the bottom rows of the 5x5 triangle.",
                values={"causal_mask(2, 5)": cached.int()},
            ),
            Step(
                "Padding masks combine with a logical AND. Here the first position is "
                "padding: no query may attend to it, and the padding query's own row is "
                "empty (its output becomes zeros).",
                values={"causal AND padding (0, 1, 1, 1)": combined.int()},
            ),
        ],
    )


def _section_mask_matrix(mask) -> Section:
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return Section(
        "The mask matrix",
        [
            Step(
                "For 4 tokens: 1 where attending is allowed (on and below the diagonal), 0 "
                "above it. Written additively it is 0 where allowed and -inf where not, "
                "added to the scores.",
                values={"causal_mask(4)": mask.int(), "as added to the scores": additive},
                decimals=0,
            )
        ],
    )


def build() -> Lesson:
    attention, x, changed = inputs()
    mask = causal_mask(len(WORDS))
    sections = [
        _section_without_masking_token(attention, x, changed),
        _section_masking(attention, x, changed),
        _section_implementation(mask),
        _section_mask_matrix(mask),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
