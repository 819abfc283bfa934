"""Lesson "muon": orthogonalized updates, Newton-Schulz on a 4x4 matrix, and which weights get it.

The iterates come from `llm_internals.training.muon.newton_schulz` under a recorder; the split
of parameters from `training.muon_adamw.split_params_by_role` on the library's GPT-2 model.
Singular values are measured with torch.linalg.svdvals to show what each iteration did.
"""

from __future__ import annotations

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import GPT2_STYLE, tiny_decoder
from llm_internals.models.decoder import DecoderLM
from llm_internals.trace import recording
from llm_internals.training.muon import NS_COEFFICIENTS, NS_STEPS, newton_schulz
from llm_internals.training.muon_adamw import split_params_by_role

INFO = LessonInfo(
    name="muon",
    title="Muon: orthogonalizing the update of hidden weight matrices",
    summary="What an orthogonalized update is, five Newton-Schulz iterations on a 4x4 matrix "
    "with the singular values after each, and why only hidden matrices get it.",
)

SINGULAR_VALUES = [8.0, 2.0, 0.5, 0.1]
SEED = 0
POLY_POINTS = [0.01, 0.1, 0.3, 0.6, 0.9, 1.0, 1.2]


def example_matrix() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 4x4 gradient-like matrix G = U diag(SINGULAR_VALUES) V^T (float64), with U and V."""
    g = torch.Generator().manual_seed(SEED)
    u, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(SINGULAR_VALUES, dtype=torch.float64)) @ v.T, u, v


def tiny_gpt2() -> DecoderLM:
    """A one-block GPT-2-style tiny decoder (explain/tiny_models.py), without touching the
    caller's random generator."""
    with torch.random.fork_rng():
        return tiny_decoder(SEED, **GPT2_STYLE, vocab_size=64, d_model=16, n_layers=1,
                            max_seq_len=32).train()  # fmt: skip


def _svals(matrix: torch.Tensor) -> list[float]:
    return torch.linalg.svdvals(matrix.double()).tolist()


def _svals_tensor(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix.double())


def _section_what_it_means(g: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> Section:
    return Section(
        "What orthogonalizing an update means",
        [
            Step(
                "Any matrix factors as G = U S V^T (the SVD): orthogonal U and V (rotations), "
                "and non-negative singular values S. A step W <- W - lr G moves W by s_i along "
                "the i-th pair of directions. Gradients of hidden layers are usually dominated "
                "by a few directions: here one singular value is 80 times the smallest.",
                formula="G = U diag(s) V^T",
                values={"G": g, "singular values of G": _svals_tensor(g)},
            ),
            Step(
                "Orthogonalizing replaces every singular value by 1, keeping the directions: "
                "O = U V^T. The update now moves W equally far along every direction the "
                "gradient points to, so rare directions are not drowned out by the dominant "
                "ones. O is the orthogonal matrix closest to G.",
                formula="O = U V^T   (all singular values 1)",
                values={"U V^T": u @ v.T, "singular values of U V^T": _svals_tensor(u @ v.T)},
            ),
        ],
    )


def _section_newton_schulz(g: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> Section:
    a, b, c = NS_COEFFICIENTS
    with recording() as rec:
        result = newton_schulz(g, dtype=torch.float64)
    target = u @ v.T
    iterates = [rec.get("ns_normalized"), *rec.all("ns_iterate")]
    rows = [[step, *_svals(x), float((x - target).norm())] for step, x in enumerate(iterates)]
    poly_rows = [[s, a * s + b * s**3 + c * s**5] for s in POLY_POINTS]
    return Section(
        "Newton-Schulz iterations on a 4x4 matrix",
        [
            Step(
                "An SVD is slow on a GPU; Muon gets close to U V^T with matrix products only. "
                "First divide G by its Frobenius norm, which is at least its largest singular "
                "value, so every singular value lands in (0, 1]. Then repeat the quintic "
                "iteration below. Since X X^T = U S^2 U^T, one iteration maps X = U S V^T to "
                "U p(S) V^T: it acts on each singular value separately, through the polynomial "
                "p, and never changes U or V.",
                formula=f"X <- a X + (b A + c A^2) X,  A = X X^T,  (a, b, c) = {NS_COEFFICIENTS}"
                "\np(s) = a s + b s^3 + c s^5",
            ),
            Step(
                "p has slope a = 3.4445 at 0, so small singular values grow about 3.4x per "
                "iteration, while values near 1 are pulled back towards about 0.7-1.2. It is "
                "tuned for speed, not exact convergence: p(1) is not 1.",
                values={"p(s)": Table(["s", "p(s)"], poly_rows)},
            ),
            Step(
                f"The library's newton_schulz on G ({NS_STEPS} iterations, float64 here). Row 0 is "
                "G divided by its norm; each row after is one iteration. The spread of singular "
                "values shrinks from 80x to under 2x, and the distance to U V^T falls to about "
                "a quarter (not monotonically: the iteration overshoots and comes back).",
                values={
                    "singular values per iteration": Table(
                        ["iteration", "s1", "s2", "s3", "s4", "||X - U V^T||"], rows
                    ),
                    "result": result,
                },
            ),
            Step(
                "In the optimizer the same iteration runs in bfloat16 (torch.optim.Muon does the "
                "same): the products are cheap and the result only needs to be roughly "
                "orthogonal.",
                values={
                    "singular values, bfloat16 run": _svals_tensor(newton_schulz(g)),
                },
            ),
        ],
    )


def _section_hidden_only() -> Section:
    rows = [
        [r.name, "x".join(map(str, r.param.shape)), r.role, r.optimizer]
        for r in split_params_by_role(tiny_gpt2())
    ]
    return Section(
        "Why only hidden matrices",
        [
            Step(
                "Orthogonalization needs a matrix that maps one space of activations to another "
                "(a linear layer's weight): then 'move every direction equally' has a meaning. "
                "Vectors (LayerNorm gains, biases) have no singular directions. An embedding "
                "table is a lookup, not a map: each row is updated only when its token occurs, "
                "and orthogonalizing would mix rare and frequent tokens' rows. The output head "
                "(here tied to the embedding) produces logits whose per-token scale matters. "
                "These go to AdamW; attention and MLP projections go to Muon.",
                values={
                    "parameter split for a one-block GPT-2": Table(
                        ["parameter", "shape", "role", "optimizer"], rows
                    )
                },
            ),
            Step(
                "Muon also rescales the step of a rows x cols matrix by sqrt(max(1, rows/cols)) "
                "so that tall and wide matrices get updates of similar size per entry, keeps "
                "Nesterov momentum (the iteration is applied to the momentum-smoothed "
                "gradient), and uses decoupled weight decay like AdamW.",
                formula="W <- W (1 - lr wd) - lr sqrt(max(1, rows/cols)) NS(mu-smoothed G)",
            ),
        ],
    )


def build() -> Lesson:
    g, u, v = example_matrix()
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_what_it_means(g, u, v),
            _section_newton_schulz(g, u, v),
            _section_hidden_only(),
        ],
    )
