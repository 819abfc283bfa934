"""Parameter counts of the `ffn` lesson: the FFN's share of published models' parameters,
FFN against attention in the lessons' tiny decoder and a published model, and a dense model
against its mixture-of-experts version (Mistral-7B -> Mixtral-8x7B). All from
`count_parameters` on configs, never from downloaded weights.
"""

from __future__ import annotations

from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.models.params import count_model_parameters
from llm_internals.models.published import parameter_counts

IMPORTANCE_MODEL = "llama-3-8b"

MOE_EXPERTS, MOE_ACTIVE = 8, 2  # Mixtral-8x7B: Mistral-7B's shape with 8 experts, top-2 routing


def models() -> dict[str, dict[str, int]]:
    """Parameter counts by component of published configs."""
    counts = {"BERT-base": parameter_counts("bert-base")}
    for name, model in (("GPT-2 (124M)", "gpt2-124m"), ("SmolLM-135M", "smollm-135m"),
                        ("Qwen3-0.6B", "qwen3-0.6b"), ("Llama-3-8B", "llama-3-8b"),
                        ("Llama-3-70B", "llama-3-70b")):  # fmt: skip
        counts[name] = parameter_counts(model)
    return counts


def share_rows() -> list[list]:
    rows = []
    for name, c in models().items():
        non_embedding = c["total"] - c["embeddings"] - c["lm_head"]
        rows.append([name, c["ffn"], c["total"], 100 * c["ffn"] / c["total"],
                     100 * c["ffn"] / non_embedding])  # fmt: skip
    return rows


def moe_rows() -> list[list]:
    dense = parameter_counts("mistral-7b")
    experts = MOE_EXPERTS * dense["ffn"]
    total = dense["total"] - dense["ffn"] + experts
    active = dense["total"] - dense["ffn"] + MOE_ACTIVE * dense["ffn"]
    return [["Mistral-7B (dense)", dense["ffn"], dense["total"], dense["total"]],
            [f"{MOE_EXPERTS} experts, top-{MOE_ACTIVE}", experts, total, active]]  # fmt: skip


def importance_rows() -> list[list]:
    """FFN vs attention parameters in the lesson's tiny decoder and a published model."""
    rows = []
    for name, counts in (
        ("tiny decoder (this course)", count_model_parameters(tiny_decoder())),
        (IMPORTANCE_MODEL, parameter_counts(IMPORTANCE_MODEL)),
    ):
        rows.append([name, counts["ffn"], counts["attention"], counts["ffn"] / counts["attention"],
                     100 * counts["ffn"] / counts["total"]])  # fmt: skip
    return rows
