"""Lesson "rope": rotary position embedding, from the 2D rotation to real models' theta.

Rotations come from the library's `RotaryEmbedding` and `apply_rope` (HF "half" layout);
the permutation check runs `MultiHeadAttention`; the older approaches use `sinusoidal_table`.
The relative-position check places the same query and key at many positions and compares the
dot products of what `apply_rope` returned.
"""

from __future__ import annotations

import math

import torch

from llm_internals.explain.figures import path_figure
from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.layers.multihead import MultiHeadAttention
from llm_internals.layers.positional import sinusoidal_table
from llm_internals.layers.rope import RotaryEmbedding, apply_rope
from llm_internals.models.published import model_config
from llm_internals.trace import recording

INFO = LessonInfo(
    name="rope",
    title="RoPE: positions as rotations",
    summary="Why attention needs positions, the 2D rotation, why q.k then depends only on the "
    "offset (checked), and the theta of real models.",
)

QUERY = [1.0, 2.0, 3.0, 4.0]
KEY = [0.5, -1.0, 2.0, 1.0]
EXAMPLE_POSITION = 2
THETA = 10000.0
INPUTS = (
    LessonInput("position", "position of the example query", EXAMPLE_POSITION, minimum=0,
                maximum=1_000_000, help="the numeric example rotates the query to this position"),
    LessonInput("theta", "RoPE base theta", THETA, kind="float", minimum=1.0, maximum=1e8,
                help="frequencies w_i = theta^(-2i/d): 10,000 in Llama 2, 500,000 in Llama 3"),
)  # fmt: skip
PAIRS = [(3, 0), (5, 2), (10, 7), (50, 47), (3, 1), (10, 2)]  # (query position, key position)
# meta-llama/Llama-3.1-8B config.json rope_scaling (theta 500000, head_dim 128)
LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip


def rotate(vector: list[float], positions: list[int], theta: float = THETA) -> torch.Tensor:
    """`vector` placed at each position: (len(positions), head_dim) after RoPE."""
    rope = RotaryEmbedding(len(vector), theta)
    cos, sin = rope(torch.tensor([positions]))
    x = torch.tensor(vector).expand(1, 1, len(positions), len(vector))
    return apply_rope(x, cos, sin)[0, 0]


def relative_rows() -> list[list]:
    rows = []
    for m, n in PAIRS:
        q = rotate(QUERY, [m])[0]
        k = rotate(KEY, [n])[0]
        rows.append([m, n, m - n, float(q @ k)])
    return rows


def permutation_check() -> tuple[torch.Tensor, float]:
    """Attention without positions on x and on x reversed: outputs are just reversed."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, n_heads=2)
    x = torch.randn(1, 5, 8)
    with torch.no_grad():
        out = attention(x)
        out_reversed = attention(x.flip(1))
    return out[0], float((out_reversed.flip(1) - out).abs().max())


def theta_rows() -> list[list]:
    models = [(label, model_config(name)) for label, name in (
        ("Llama-2-7B", "llama-2-7b"), ("Mistral-7B-v0.1", "mistral-7b"),
        ("SmolLM-135M", "smollm-135m"), ("Llama-3-8B", "llama-3-8b"),
        ("Qwen2.5-7B", "qwen2.5-7b"), ("Qwen3-0.6B", "qwen3-0.6b"))]  # fmt: skip
    rows = []
    for name, config in models:
        inv_freq = RotaryEmbedding(config.head_dim, config.rope_theta).inv_freq
        rows.append([name, config.rope_theta, config.head_dim, 2 * math.pi / float(inv_freq.min())])
    scaled = RotaryEmbedding(128, 500000.0, scaling=LLAMA31_SCALING).inv_freq
    rows.append(["Llama-3.1-8B (llama3 scaling x8)", 500000.0, 128,
                 2 * math.pi / float(scaled.min())])  # fmt: skip
    return rows


def _section_positions() -> Section:
    out, permutation_error = permutation_check()
    return Section(
        "Why positions",
        [
            Step(
                "Attention compares every query with every key by dot products: nothing in "
                "it depends on where a token sits. Reversing the input of a real attention "
                "layer (no positional information) just reverses its output, so 'dog bites "
                "man' and 'man bites dog' would look alike.",
                values={"max |attn(reversed x) reversed - attn(x)|": permutation_error},
                decimals=8,
            )
        ],
    )


def _section_older_approaches() -> Section:
    return Section(
        "Older approaches",
        [
            Step(
                "The original Transformer added fixed sinusoids to the embeddings; GPT-2 and "
                "BERT add a learned vector per position (so they cannot go beyond the "
                "positions seen in training). Both mix position into the token vector "
                "itself, and attention has to learn to untangle absolute positions into "
                "relative ones. Sinusoidal table for 6 positions, d = 8:",
                formula="PE(p, 2i) = sin(p / 10000^(2i/d)),  PE(p, 2i+1) = cos(p / 10000^(2i/d))",
                values={"sinusoidal_table(6, 8)": sinusoidal_table(6, 8)},
                decimals=3,
            )
        ],
    )


def _section_2d_rotation() -> Section:
    positions = list(range(6))
    pair = rotate([1.0, 0.0], positions, theta=1.0)  # head_dim 2: one pair, w = 1 rad/position
    return Section(
        "The 2D rotation",
        [
            Step(
                "RoPE instead rotates. Take a pair of features (a, b) as a point in the "
                "plane and rotate it by an angle proportional to the position m. The vector "
                "(1, 0) at positions 0..5 with frequency w = 1 radian per position:",
                formula="(a, b) -> (a cos(m w) - b sin(m w),  a sin(m w) + b cos(m w))",
                values={"rotated (1, 0)": pair},
            )
        ],
    )


FIGURE_POSITIONS = 16  # the query at positions 0 .. 15 in the rotation figure
FIGURE_THETA = 100.0  # w = (1, 0.1) for head_dim 4: both pairs visibly turn


def rotation_figure():
    """QUERY's two feature pairs, (q0, q2) and (q1, q3) in the 'half' layout, at positions
    0 .. FIGURE_POSITIONS - 1 as apply_rope returned them (theta FIGURE_THETA): one circle each,
    at w = 1 and 0.1 radian per position."""
    moved = rotate(QUERY, list(range(FIGURE_POSITIONS)), theta=FIGURE_THETA)
    return path_figure(
        "rope", "rotation",
        f"The query {QUERY} at positions 0..{FIGURE_POSITIONS - 1} (head_dim 4, theta "
        f"{FIGURE_THETA:g}): pair 0 (features 0 and 2) turns 1 radian per position, pair 1 "
        "(features 1 and 3) 0.1 radian; each point is labelled with its position. Both stay on "
        "their circle: RoPE never changes a pair's length.",
        {"pair 0 (q0, q2), w = 1": moved[:, [0, 2]], "pair 1 (q1, q3), w = 0.1": moved[:, [1, 3]]},
        "first feature of the pair", "second feature of the pair",
        title="RoPE rotation over positions",
    )  # fmt: skip


def _section_applying_q_k() -> Section:
    moved = rotate(QUERY, [0, 1, 2, 3])
    return Section(
        "Applying to Q and K",
        [
            Step(
                "A head of size d is split into d/2 pairs, pair i rotating at frequency "
                "w_i = theta^(-2i/d): fast for the first pairs, very slow for the last. "
                "Only queries and keys are rotated (inside every attention layer), never "
                "the values or the residual stream. HF checkpoints pair feature i with "
                "i + d/2 ('rotate half'). The same query at positions 0..3 keeps its length:",
                formula="q'_m = R(m) q,   k'_n = R(n) k",
                values={
                    "query at positions 0..3": moved,
                    "lengths": moved.norm(dim=-1),
                },
                figures=[rotation_figure()],
            )
        ],
    )


def _section_relative_position() -> Section:
    return Section(
        "Why the dot product sees relative position",
        [
            Step(
                "Rotations compose: R(m)^T R(n) = R(n - m). So q'_m . k'_n = q . R(n - m) k "
                "depends on the positions only through the offset m - n. The same q and k "
                "placed at different positions, measured:",
                formula="(R(m) q) . (R(n) k) = q . R(n - m) k",
                values={
                    "dot products": Table(
                        ["query position m", "key position n", "m - n", "q'_m . k'_n"],
                        relative_rows(),
                    )
                },
                decimals=6,
            )
        ],
    )


def _section_small_numeric_example(
    position: int = EXAMPLE_POSITION, theta: float = THETA
) -> Section:
    rope = RotaryEmbedding(4, theta)
    with recording() as rec:
        cos, sin = rope(torch.tensor([[position]]))
    q_rot = apply_rope(torch.tensor(QUERY).view(1, 1, 1, 4), cos, sin)[0, 0, 0]
    return Section(
        "A small numeric example",
        [
            Step(
                f"head_dim 4, theta {theta:g}: frequencies w = (1, {theta**-0.5:g}). The query "
                f"{QUERY} at position {position}: angles {position} * w; "
                "cos and sin are laid out per feature (each frequency twice, 'half' layout), "
                "and q' = q * cos + rotate_half(q) * sin with rotate_half(q) = (-q2, -q3, "
                "q0, q1).",
                values={
                    "w": rope.inv_freq,
                    "cos": rec.get("rope_cos")[0, 0],
                    "sin": rec.get("rope_sin")[0, 0],
                    "q": torch.tensor(QUERY),
                    "q'": q_rot,
                },
            )
        ],
    )


def _section_real_models_theta() -> Section:
    return Section(
        "Real models' theta",
        [
            Step(
                "theta sets the slowest rotation: its wavelength (2 pi / smallest w, in "
                "tokens) should exceed the context so that far-apart positions stay "
                "distinguishable. Long-context models raised theta from 10,000 to 500,000 "
                "or 1,000,000; Llama 3.1 also stretches its low frequencies by 8 for a "
                "128k context. Values from the published config.json files:",
                values={
                    "rope_theta": Table(
                        ["model", "theta", "head_dim", "longest wavelength (tokens)"],
                        theta_rows(),
                    )
                },
                decimals=0,
            )
        ],
    )


FAR_POSITION = 1000
SUMMARY_OFFSET = 3  # the pairs of PAIRS with this offset show one dot product


def summary_rows() -> list[list]:
    """Each claim of the summary, measured on what the library's RoPE returned."""
    near, far = rotate(QUERY, [0, FAR_POSITION]).norm(dim=-1).tolist()
    same_offset = [row[3] for row in relative_rows() if row[2] == SUMMARY_OFFSET]
    parameters = sum(p.numel() for p in RotaryEmbedding(len(QUERY), THETA).parameters())
    return [
        ["|q| at position 0", near],
        [f"|q| at position {FAR_POSITION:,}", far],
        [f"pairs with offset {SUMMARY_OFFSET}", len(same_offset)],
        ["spread of their q . k (max - min)", max(same_offset) - min(same_offset)],
        ["learned parameters in RotaryEmbedding", parameters],
    ]


def _section_summary() -> Section:
    return Section(
        "Summary",
        [
            Step(
                "RoPE rotates each pair of a query's and a key's features by an angle "
                "proportional to the token's position, at frequencies from 1 down to 1/theta. "
                "Rotations keep lengths, so the content of q and k is untouched; the dot "
                "product of a rotated query and key depends only on their offset, so "
                "attention sees relative positions; nothing is learned and nothing is added "
                "to the residual stream; only q and k are rotated, never v. A larger theta "
                "slows the slowest rotation for longer contexts. Measured on this lesson's "
                "query and key:",
                formula="q_m . k_n = Re[ sum_i q_i conj(k_i) e^{j (m - n) w_i} ],  "
                "w_i = theta^(-2i/d)",
                values={"checks": Table(["claim", "measured"], summary_rows())},
                decimals=6,
            )
        ],
    )


def build(position: int = EXAMPLE_POSITION, theta: float = THETA) -> Lesson:
    sections = [
        _section_positions(),
        _section_older_approaches(),
        _section_2d_rotation(),
        _section_applying_q_k(),
        _section_relative_position(),
        _section_small_numeric_example(position, theta),
        _section_real_models_theta(),
        _section_summary(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
