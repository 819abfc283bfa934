"""Lesson "transformer": the architecture end to end, with the shape of every step.

A BPE tokenizer is trained on one line of Hamlet; a tiny GPT-2-style `DecoderLM` (2 layers,
d_model 16, 4 heads) and a tiny post-norm `Seq2SeqLM` run under a recorder, and the lesson lists
what they recorded with its shape. Parameter counts of real published configs come from
`models.published.parameter_counts` (decoders, BERT, T5; formulas in `models.params`).
"""

from __future__ import annotations

from llm_internals.explain.figures import heatmap_figure
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.lesson_model import load_lesson_model, token_labels, trained_attention
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.transformer_runs import (
    VOCAB_SIZE,
    run_decoder,
    run_seq2seq,
    tokenizer,
)
from llm_internals.explain.transformer_tables import data_flow, family_counts

INFO = LessonInfo(
    name="transformer",
    title="The Transformer, end to end",
    summary="Tokens to logits through a tiny real model, shape by shape; encoder, decoder and "
    "the three families with real parameter counts.",
)

PROMPT = "To be, or not to be"
SOURCE = "that is the question"


def _section_why_needed() -> Section:
    return Section(
        "Why it was needed",
        [
            Step(
                "Recurrent networks read a sentence one token at a time, carrying one state "
                "vector forward: training cannot run the positions in parallel, and "
                "information from far back must survive many updates. The Transformer "
                "(Vaswani et al., 2017) drops recurrence: attention lets every position read "
                "every other position directly, and all positions are computed at once."
            )
        ],
    )


def _section_two_halves() -> Section:
    return Section(
        "The two halves",
        [
            Step(
                "The original model translates. An encoder reads the whole source sentence "
                "(bidirectional attention); a decoder writes the target one token at a time "
                "(causal self-attention) and reads the encoder's output through "
                "cross-attention. Both are stacks of identical blocks: attention, then a "
                "feed-forward network, each wrapped in a residual connection and a norm."
            )
        ],
    )


def _section_tokenization_embedding_positional(ids, tok, config, rec) -> Section:
    pieces = [tok.decode([i]) for i in ids]
    return Section(
        "Tokenization, embedding, positional encoding",
        [
            Step(
                f"A byte-level BPE tokenizer (trained here on one repeated line, vocabulary "
                f"{VOCAB_SIZE}) cuts the text into tokens and maps them to ids.",
                values={
                    "text": PROMPT,
                    "tokens": Table(
                        ["piece", "id"],
                        [[repr(p), i] for p, i in zip(pieces, ids, strict=True)],
                    ),  # fmt: skip
                },
            ),
            Step(
                f"Each id selects a row of the embedding table ({config.vocab_size} x "
                f"{config.d_model}). Attention itself ignores order, so a position vector is "
                "added (learned here as in GPT-2; sinusoidal in the original; rotations of "
                "q and k in Llama, see 'rope').",
                formula="h_0 = E_tok[ids] + E_pos[0..T-1]",
                values={"h_0": rec.get("embedding")[0]},
                decimals=3,
            ),
        ],
    )


TRAINED_TEXT = "To be, or not to be, that is the question."
TRAINED_LAYER = 3  # the layer whose four heads the trained-model figure shows (layer 4)


def trained_heads_step() -> Step:
    """The four heads of one layer of the shipped trained model, as a figure, and each head's
    weights for the last token."""
    ids, weights = trained_attention(TRAINED_TEXT)
    labels = token_labels(load_lesson_model()[1], ids)
    layer = weights[TRAINED_LAYER]
    figure = heatmap_figure(
        "transformer", "heads",
        f"Layer {TRAINED_LAYER + 1} of the lessons' trained model on '{TRAINED_TEXT}', one panel "
        "per head: rows are queries, columns keys. Each head has learned its own pattern.",
        {f"head {h + 1}": layer[h] for h in range(layer.shape[0])}, labels, labels,
        vmin=0.0, vmax=1.0,
    )  # fmt: skip
    return Step(
        "Trained weights are different: the lessons' small trained model (4 layers of 4 heads, "
        "trained on Shakespeare, shipped with the package) on one line. Its heads no longer "
        "spread weight evenly; each attends to its own choice of earlier tokens. The last "
        f"token's ({labels[-1]}) weights per head:",
        values={"keys": ", ".join(labels), **{
            f"trained layer {TRAINED_LAYER + 1}, head {h + 1}, last token": layer[h, -1]
            for h in range(layer.shape[0])
        }},
        decimals=3,
        figures=[figure],
    )  # fmt: skip


def _section_attention_multi_head(config, rec) -> Section:
    return Section(
        "Attention and multi-head",
        [
            Step(
                f"d_model = {config.d_model} is split into {config.n_heads} heads of "
                f"{config.head_dim}: each head has its own Q, K, V projections and attends "
                "independently, so different heads can follow different relations. Head "
                "outputs are concatenated and mixed by W_o. Layer 1's weights per head: the "
                "model is untrained (GPT-2's init, std 0.02), so they are nearly uniform "
                "over the visible tokens; training is what makes them selective.",
                values={
                    f"head {h} weights": rec.all("weights")[0][0, h] for h in range(config.n_heads)
                },
                decimals=3,
            ),
            trained_heads_step(),
        ],
    )


def _section_ffn_residuals_layer(config) -> Section:
    return Section(
        "FFN, residuals, layer norm",
        [
            Step(
                "After attention each position goes through the same two-layer MLP on its "
                f"own ({config.d_model} -> {config.d_ff} -> {config.d_model}). Each sublayer "
                "adds its result to its input (the residual stream), so a block refines "
                "rather than replaces, and gradients flow straight through the additions. "
                "A norm keeps the scale of the stream under control (pre-norm in GPT-2).",
                formula="h = h + Attention(Norm(h));   h = h + FFN(Norm(h))",
            )
        ],
    )


def _section_encoder_decoder(ids, tok) -> Section:
    seq_rec = run_seq2seq(tok.encode(SOURCE), ids)
    cross_weights = seq_rec.all("weights")[-1]  # the decoder's last attention is cross-attention
    self_weights = seq_rec.all("weights")[-2]
    return Section(
        "Encoder and decoder",
        [
            Step(
                f"A tiny encoder-decoder (post-norm, sinusoidal positions, ReLU) translating "
                f"'{SOURCE}' to '{PROMPT}': the decoder's self-attention is causal "
                "(target x target, zeros above the diagonal), its cross-attention is "
                "target x source with no mask: every target token may read the whole "
                "source.",
                values={
                    "encoder output shape": str(tuple(seq_rec.get("encoder_output").shape)),
                    "decoder self-attention (head 0)": self_weights[0, 0],
                    "cross-attention (head 0)": cross_weights[0, 0],
                },
                decimals=3,
            )
        ],
    )


def _section_data_flow_shape(ids, rec, config) -> Section:
    return Section(
        "The data flow, shape by shape",
        [
            Step(
                f"What the tiny decoder recorded for a batch of 1 x {len(ids)} tokens: "
                "(batch, tokens, d_model) between steps, (batch, heads, tokens, head_dim) "
                "and (batch, heads, tokens, tokens) inside attention. Layer 2 repeats "
                "layer 1; the final LayerNorm and the tied output head give one logit per "
                "vocabulary entry at every position.",
                values={
                    "steps": Table(
                        ["step", "recorded as", "shape"], data_flow(rec, config.n_layers)
                    )
                },
            )
        ],
    )


def _section_three_variants() -> Section:
    return Section(
        "The three variants",
        [
            Step(
                "Encoder-only (BERT: bidirectional, for understanding and embeddings), "
                "decoder-only (GPT, Llama: causal, for generation; today's LLMs), "
                "encoder-decoder (T5, the original: for input-to-output tasks such as "
                "translation). Parameter counts from the published configs; 'other' is "
                "BERT's pooler and T5's relative-position tables; a head of 0 is tied to "
                "the embedding.",
                values={
                    "parameters": Table(
                        [
                            "model",
                            "family",
                            "embeddings",
                            "attention",
                            "ffn",
                            "norms",
                            "lm_head",
                            "other",
                            "total",
                        ],  # fmt: skip
                        family_counts(),
                    )
                },
            )
        ],
    )


def _section_why_powerful(ids, tok, rec) -> Section:
    weights = next(r.value for r in rec.records if r.name == "weights")  # layer 1
    last_row = weights[0, 0, -1]
    tokens = len(ids)
    reached = int((last_row > 0).sum())
    comparison = [
        ["steps from the first token to the last", tokens - 1, 1],
        ["positions one layer lets the last token read", 1, reached],
        ["steps per layer that must run one after another", tokens, 1],
    ]
    return Section(
        "Why it is so powerful",
        [
            Step(
                "Three properties together. Every token reads every earlier token directly, "
                "in one step, with weights computed from the content (a recurrent network "
                "passes information along one position at a time and forgets on the way). "
                "All positions are processed at once as matrix products, which GPUs run "
                "fast, so training scales to trillions of tokens. And the same block, "
                "stacked and widened, keeps improving with more parameters, data and compute "
                "(the scaling laws). Below, the last token of the prompt "
                f"({tok.decode(ids[-1:])!r}) in layer 1, head 1 of the tiny decoder "
                f"(random weights): it puts weight on all {tokens} positions at once.",
                values={
                    "layer 1, head 1: last token's attention weights": last_row,
                    "RNN vs attention": Table(
                        ["for this prompt", "RNN", "self-attention"], comparison
                    ),
                },
            )
        ],
    )


def build() -> Lesson:
    tok = tokenizer()
    ids = tok.encode(PROMPT)
    model, rec = run_decoder(ids)
    config = model.config
    sections = [
        _section_why_needed(),
        _section_two_halves(),
        _section_tokenization_embedding_positional(ids, tok, config, rec),
        _section_attention_multi_head(config, rec),
        _section_ffn_residuals_layer(config),
        _section_encoder_decoder(ids, tok),
        _section_data_flow_shape(ids, rec, config),
        _section_three_variants(),
        _section_why_powerful(ids, tok, rec),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
