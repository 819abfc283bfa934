"""Tables of the `transformer` lesson: the data flow of a recorded decoder pass (each step's
recorded name and shape) and parameter counts by component of published models of the three
families (`models.published.parameter_counts`).
"""

from __future__ import annotations

from llm_internals.explain.transformer_runs import VOCAB_SIZE
from llm_internals.models.published import parameter_counts
from llm_internals.trace import Recording

# The recorded names the data-flow table shows, with what each step is.
FLOW = {
    "token_embedding": "token embedding lookup",
    "embedding": "+ learned position embedding",
    "norm_output": "LayerNorm",
    "q": "queries, split into heads",
    "k": "keys",
    "v": "values",
    "scores": "Q K^T per head",
    "weights": "softmax (causal)",
    "output": "weights V per head",
    "attention_output": "heads concatenated, W_o",
    "residual_after_attention": "residual add",
    "ffn_up": "FFN expand",
    "ffn_activated": "GELU",
    "ffn_output": "FFN contract",
    "block_output": "residual add = block output",
    "logits": "output head: one score per vocabulary token",
}


def data_flow(rec: Recording, n_layers: int) -> list[list]:
    """(step, recorded name, shape): layer 1 in full, later layers by their output only."""
    rows, blocks_done = [], 0
    for record in rec.records:
        if record.name not in FLOW:
            continue
        if record.name == "logits" and record.value.shape[-1] != VOCAB_SIZE:
            continue  # softmax records its input as "logits" too
        shape = str(tuple(record.value.shape))
        if record.name == "block_output":
            blocks_done += 1
            rows.append([f"{FLOW[record.name]} (layer {blocks_done})", record.name, shape])
        elif blocks_done == 0 or record.name == "logits":
            rows.append([FLOW[record.name], record.name, shape])
        elif blocks_done == n_layers and record.name == "norm_output":
            rows.append(["final LayerNorm", record.name, shape])
    return rows


def family_counts() -> list[list]:
    models = [
        ("BERT-base", "encoder-only", parameter_counts("bert-base")),
        ("GPT-2 (124M)", "decoder-only", parameter_counts("gpt2-124m")),
        ("Llama-3-8B", "decoder-only", parameter_counts("llama-3-8b")),
        ("T5-base", "encoder-decoder", parameter_counts("t5-base")),
    ]
    return [
        [
            name,
            family,
            *(
                c[k]
                for k in ("embeddings", "attention", "ffn", "norms", "lm_head", "other", "total")
            ),
        ]  # fmt: skip
        for name, family, c in models
    ]
