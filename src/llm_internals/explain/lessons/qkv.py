"""Lesson "qkv": attention's formula, one step at a time, on 3 tokens with d_k = 4.

The numbers come from the library's `MultiHeadAttention` (one head, no biases) run under a
recorder; its weights are set to readable one-decimal values so that every product can be
followed by hand. The output projection W_o is the identity, so the layer's output is exactly
softmax(Q K^T / sqrt(d_k)) V.
"""

from __future__ import annotations

import math

import torch

from llm_internals.explain.figures import heatmap_figure
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_model import load_lesson_model, token_labels, trained_attention
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.embedding import TokenEmbedding
from llm_internals.layers.multihead import MultiHeadAttention
from llm_internals.trace import recording

INFO = LessonInfo(
    name="qkv",
    title="Queries, keys and values: attention step by step",
    summary="Three tokens, d_k = 4: project to Q, K, V, score, scale, softmax, and mix the values.",
)

WORDS = ["the", "cat", "sat"]
D_MODEL = 4
SEED = 0


def readable(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random values in [-1, 1] rounded to one decimal: easy to multiply by hand."""
    values = (torch.rand(shape, generator=generator) * 2 - 1).mul(10).round().div(10)
    return values + 0.0  # turns -0.0 into 0.0


def build_layers() -> tuple[TokenEmbedding, MultiHeadAttention]:
    """A 3-word embedding table and a one-head attention layer with readable weights."""
    generator = torch.Generator().manual_seed(SEED)
    embedding = TokenEmbedding(len(WORDS), D_MODEL)
    attention = MultiHeadAttention(D_MODEL, n_heads=1)
    with torch.no_grad():
        embedding.weight.copy_(readable((len(WORDS), D_MODEL), generator))
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            proj.weight.copy_(readable((D_MODEL, D_MODEL), generator))
        attention.o_proj.weight.copy_(torch.eye(D_MODEL))
    return embedding, attention


def run() -> tuple[TokenEmbedding, MultiHeadAttention, dict[str, torch.Tensor]]:
    """Embed the words and attend once, recording every step."""
    embedding, attention = build_layers()
    ids = torch.arange(len(WORDS))[None, :]
    with recording() as rec, torch.no_grad():
        x = embedding(ids)
        attention(x)
    per_head = ("q", "k", "v", "scores", "scaled_scores", "weights", "output")
    values = {name: rec.get(name)[0, 0] for name in per_head}  # batch 0, head 0
    for name in ("token_embedding", "attention_output"):
        values[name] = rec.get(name)[0]
    return embedding, attention, values


def _section_attention_formula() -> Section:
    return Section(
        "The attention formula",
        [
            Step(
                "Attention lets every token build its new vector from the other tokens' "
                "vectors. Each token asks a question (its query), advertises what it holds "
                "(its key) and offers content (its value). How well a query matches a key "
                "decides how much of that key's value flows in.",
                formula="Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V",
            )
        ],
    )


def _section_from_words_vectors(r) -> Section:
    row = {"rows": ", ".join(WORDS)}
    return Section(
        "From words to vectors",
        [
            Step(
                f"The sentence '{' '.join(WORDS)}' becomes token ids 0, 1, 2, and the "
                f"embedding table turns each id into a vector of d_model = {D_MODEL} numbers "
                "(one row per word below).",
                values={"X (embeddings)": r["token_embedding"], **row},
                decimals=1,
            )
        ],
    )


def _section_creating_qkv(r, attention) -> Section:
    return Section(
        "Creating Q, K and V",
        [
            Step(
                "Three learned matrices project every token vector into a query, a key and a "
                "value (nn.Linear stores W as (out, in), so the product is x W^T).",
                formula="Q = X W_q^T,  K = X W_k^T,  V = X W_v^T",
                values={
                    "W_q": attention.q_proj.weight.detach(),
                    "W_k": attention.k_proj.weight.detach(),
                    "W_v": attention.v_proj.weight.detach(),
                },
                decimals=1,
            ),
            Step(
                "The results, one row per token.",
                values={"Q": r["q"], "K": r["k"], "V": r["v"]},
                decimals=2,
            ),
        ],
    )


def _section_scores(r) -> Section:
    return Section(
        "Scores: Q K^T",
        [
            Step(
                "Row i, column j is the dot product of token i's query with token j's key: "
                "how much token i is interested in token j.",
                formula="scores_ij = q_i . k_j",
                values={"scores": r["scores"]},
            )
        ],
    )


def _section_scaling(r) -> Section:
    scale = 1 / math.sqrt(D_MODEL)
    return Section(
        "Scaling",
        [
            Step(
                f"Divide by sqrt(d_k) = sqrt({D_MODEL}) = {math.sqrt(D_MODEL):g} so the scores "
                "keep a similar spread whatever the head size (see the 'scaling' lesson).",
                formula=f"scaled = scores * {scale:g}",
                values={"scaled scores": r["scaled_scores"]},
            )
        ],
    )


def _section_softmax(r) -> Section:
    return Section(
        "Softmax",
        [
            Step(
                "Softmax along each row turns scores into attention weights: positive, "
                "summing to 1 per row.",
                formula="weights_ij = exp(scaled_ij) / sum_j' exp(scaled_ij')",
                values={
                    "weights": r["weights"],
                    "row sums": r["weights"].sum(dim=-1),
                },
            )
        ],
    )


def _section_weights_times_v(r) -> Section:
    return Section(
        "Weights times V",
        [
            Step(
                "Each token's output is the weighted average of all value vectors, using its "
                "row of weights.",
                formula="output_i = sum_j weights_ij v_j",
                values={"output = weights V": r["output"]},
            )
        ],
    )


def _section_all_together(r) -> Section:
    return Section(
        "All together",
        [
            Step(
                "The layer ran all of this in one call (MultiHeadAttention with one head); "
                "after the output projection W_o (the identity here, a learned matrix in a "
                "real model) the result goes back into the token's stream.",
                formula="output = softmax(X W_q^T (X W_k^T)^T / sqrt(d_k)) X W_v^T W_o^T",
                values={"layer output": r["attention_output"]},
            )
        ],
    )


TRAINED_TEXT = "To be, or not to be, that is the question."
TRAINED_LAYER, TRAINED_HEAD = 3, 0  # layer 4, head 1: mostly the previous token (see the test)


def _section_trained_model() -> Section:
    ids, weights = trained_attention(TRAINED_TEXT)
    _, tokenizer = load_lesson_model()
    labels = token_labels(tokenizer, ids)
    head = weights[TRAINED_LAYER, TRAINED_HEAD]
    rows = [[label, labels[int(row.argmax())], float(row.max()), 1 / (i + 1)]
            for i, (label, row) in enumerate(zip(labels, head, strict=True))]  # fmt: skip
    figure = heatmap_figure(
        "qkv", "trained",
        f"Attention weights of layer {TRAINED_LAYER + 1}, head {TRAINED_HEAD + 1} of the lessons' "
        f"trained model on '{TRAINED_TEXT}': rows are queries, columns keys (zero above the "
        "diagonal: the model is causal).",
        {f"layer {TRAINED_LAYER + 1}, head {TRAINED_HEAD + 1}": head}, labels, labels,
        vmin=0.0, vmax=1.0,
    )  # fmt: skip
    return Section(
        "In a trained model",
        [
            Step(
                "The same computation in a model that learned its W_q, W_k, W_v: the lessons' "
                "small Llama-style model (4 layers of 4 heads, d_k = 32, trained on Shakespeare "
                "and shipped with the package) reading one line. Each token is one row; a "
                "learned head concentrates its weight where the readable random weights above "
                "could not: compare the largest weight of each row with 1/(tokens visible), "
                f"what a uniform row would give. Layer {TRAINED_LAYER + 1}, head "
                f"{TRAINED_HEAD + 1} has learned to look mostly at the token just before.",
                values={
                    "strongest key per query": Table(
                        ["query", "strongest key", "its weight", "uniform row"], rows
                    ),
                },
                decimals=3,
                figures=[figure],
            )
        ],
    )


def build() -> Lesson:
    _, attention, r = run()
    sections = [
        _section_attention_formula(),
        _section_from_words_vectors(r),
        _section_creating_qkv(r, attention),
        _section_scores(r),
        _section_scaling(r),
        _section_softmax(r),
        _section_weights_times_v(r),
        _section_all_together(r),
        _section_trained_model(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
