"""Lesson "backprop": the chain rule, applied by hand to a 2-2-1 network, then to a transformer.

The numbers come from `llm_internals.training.backprop` (no autograd) under a recorder; autograd
and finite differences appear only as the references the hand-written gradients are checked with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.source import code_block
from llm_internals.explain.tiny_models import GPT2_STYLE, tiny_decoder
from llm_internals.models.decoder import DecoderLM
from llm_internals.trace import Recording, recording
from llm_internals.training.backprop.gpt import gpt_loss_and_gradients, model_gradients
from llm_internals.training.backprop.gradcheck import compare_gradients, finite_difference
from llm_internals.training.backprop.tiny_network import (
    TwoLayerForward,
    gradient_descent_step,
    two_layer_backward,
    two_layer_forward,
)

INFO = LessonInfo(
    name="backprop",
    title="Backpropagation: the chain rule, one layer at a time",
    summary="Every partial derivative of a 2-2-1 sigmoid network by hand, a gradient-descent "
    "step, then the same machinery on a transformer block, checked against autograd.",
)

F64 = torch.float64
X = [[0.5, -1.0]]
Y = [[1.0]]
W1 = [[0.1, 0.4], [-0.3, 0.2]]
B1 = [0.0, 0.1]
W2 = [[0.7, -0.5]]
B2 = [0.2]
LEARNING_RATE = 0.5
BLOCK_SEED = 0
BLOCK_VOCAB = 11
FD_COORDINATES = [
    ("blocks.0.attn.q_proj.weight", (1, 2)),
    ("blocks.0.ffn.up_proj.bias", (5,)),
    ("tok_emb.weight", (3, 0)),
]


def network_params() -> dict[str, torch.Tensor]:
    return {
        "W1": torch.tensor(W1, dtype=F64),
        "b1": torch.tensor(B1, dtype=F64),
        "W2": torch.tensor(W2, dtype=F64),
        "b2": torch.tensor(B2, dtype=F64),
    }


def block_model_and_batch() -> tuple[DecoderLM, torch.Tensor, torch.Tensor]:
    """A seeded one-block GPT-2-style model (learned positions, LayerNorm, GELU MLP, biases,
    tied head; explain/tiny_models.py) in float64, and a batch (ids, next-token targets)."""
    with torch.random.fork_rng():
        model = tiny_decoder(BLOCK_SEED, **GPT2_STYLE, vocab_size=BLOCK_VOCAB, n_layers=1,
                             max_seq_len=8).train().double()  # fmt: skip
        ids = torch.randint(0, BLOCK_VOCAB, (2, 6))
    return model, ids[:, :-1], ids[:, 1:]


def _section_what_it_is() -> Section:
    return Section(
        "What backpropagation is",
        [
            Step(
                "Training changes every weight a little in the direction that lowers the "
                "loss. That direction is the gradient: the derivative of the loss with "
                "respect to each weight. A model has millions of weights; backpropagation "
                "computes all of those derivatives in one backward sweep that costs about "
                "twice a forward pass, by reusing intermediate results instead of "
                "differentiating each weight separately."
            )
        ],
    )


def _section_chain_rule() -> Section:
    return Section(
        "The chain rule",
        [
            Step(
                "A network is a chain of simple functions. If L depends on w only through z, "
                "the chain rule multiplies the local derivatives along the path. When a "
                "value feeds several places, the contributions of every path add up.",
                formula="dL/dw = dL/dz * dz/dw;   if z feeds a and b: dL/dz = dL/da da/dz + "
                "dL/db db/dz",
            ),
            Step(
                "Backpropagation evaluates these products from the loss backwards: each "
                "layer receives dL/d(its output), multiplies by its local derivative, hands "
                "dL/d(its input) to the layer before, and keeps dL/d(its weights)."
            ),
        ],
    )


@dataclass(frozen=True)
class NetworkRun:
    """The 2-2-1 network's forward and backward on the example, recorded, and one step."""

    params: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    rec: Recording
    fwd: TwoLayerForward
    new_params: dict[str, torch.Tensor]
    new_loss: torch.Tensor


def network_run() -> NetworkRun:
    params = network_params()
    x, y = torch.tensor(X, dtype=F64), torch.tensor(Y, dtype=F64)
    with recording() as rec:
        fwd = two_layer_forward(params, x, y)
        grads = two_layer_backward(fwd)
    new_params = gradient_descent_step(params, grads, LEARNING_RATE)
    new_loss = two_layer_forward(new_params, x, y).loss
    return NetworkRun(params, x, y, rec, fwd, new_params, new_loss)


def _section_forward(run: NetworkRun) -> Section:
    x, y, params, rec = run.x, run.y, run.params, run.rec
    return Section(
        "Forward pass",
        [
            Step(
                "The network: 2 inputs, 2 hidden sigmoid units, 1 sigmoid output (a "
                "probability). These are its weights and one training example with label 1.",
                values={
                    "x": x[0],
                    "y": y[0, 0],
                    "W1": params["W1"],
                    "b1": params["b1"],
                    "W2": params["W2"][0],
                    "b2": params["b2"],
                },  # fmt: skip
            ),
            Step(
                "Hidden layer: a weighted sum per unit, then the sigmoid.",
                formula="z1 = W1 x + b1;   h = sigmoid(z1) = 1 / (1 + exp(-z1))",
                values={"z1": rec.get("z1")[0], "h": rec.get("h")[0]},
            ),
            Step(
                "Output layer: the same with W2, giving the predicted probability p that the "
                "label is 1.",
                formula="z2 = W2 h + b2;   p = sigmoid(z2)",
                values={"z2": rec.get("z2")[0, 0], "p": rec.get("p")[0, 0]},
            ),
        ],
    )


def _section_loss(run: NetworkRun) -> Section:
    rec = run.rec
    return Section(
        "Loss",
        [
            Step(
                "Binary cross-entropy scores the prediction against the label.",
                formula="L = -(y log p + (1 - y) log(1 - p))",
                values={"L": rec.get("L")},
            )
        ],
    )


def _section_backward() -> Section:
    return Section(
        "Backward pass",
        [
            Step(
                "Start at the loss and go back one function at a time. Each step multiplies "
                "the gradient arriving from above by one local derivative:",
                formula="L <- p <- z2 <- (W2, b2, h) <- z1 <- (W1, b1)",
            )
        ],
    )


def _section_backprop_in_python(run: NetworkRun) -> Section:
    return Section(
        "Backprop in Python",
        [
            Step(
                "The backward pass this lesson runs, as written in the library: no autograd, "
                "one line per chain-rule factor, walking from the loss back to W1. Each "
                "`linear_backward` returns the gradient for the layer's input, weight and "
                "bias; each `sigmoid_backward` multiplies by p (1 - p).\n\n"
                + code_block(two_layer_backward),
                values={
                    f"dL/d{name}": run.rec.get(f"dL_d{name}") for name in ("W1", "b1", "W2", "b2")
                },
            )
        ],
    )


def _section_update(run: NetworkRun) -> Section:
    fwd, new_params, new_loss = run.fwd, run.new_params, run.new_loss
    return Section(
        "The weight update",
        [
            Step(
                f"Gradient descent moves every weight against its gradient, scaled by the "
                f"learning rate {LEARNING_RATE}. Running the forward pass again shows the loss "
                "went down.",
                formula="w <- w - lr * dL/dw",
                values={
                    "new W1": new_params["W1"],
                    "new b1": new_params["b1"],
                    "new W2": new_params["W2"][0],
                    "new b2": new_params["b2"],
                    "loss before": fwd.loss,
                    "loss after": new_loss,
                },
                decimals=6,
            )
        ],
    )


def _section_numeric(rec) -> Section:
    def step(text: str, formula: str, values: dict) -> Step:
        return Step(text, formula=formula, values=values, decimals=6)

    return Section(
        "A step-by-step numeric example",
        [
            step("Loss with respect to the output probability.",
                 "dL/dp = -y/p + (1 - y)/(1 - p)", {"dL/dp": rec.get("dL_dp")[0, 0]}),
            step("Sigmoid's local derivative at the output.",
                 "dp/dz2 = p (1 - p)", {"dp/dz2": rec.get("dp_dz2")[0, 0]}),
            step("Chain them. Sigmoid and cross-entropy simplify to p - y: the binary case of "
                 "softmax - onehot.", "dL/dz2 = dL/dp * dp/dz2 = p - y",
                 {"dL/dz2": rec.get("dL_dz2")[0, 0]}),
            step("z2 = W2 h + b2, so each output weight's gradient is dL/dz2 times the value it "
                 "multiplied, and the bias gets dL/dz2 itself.",
                 "dL/dW2 = dL/dz2 * h;   dL/db2 = dL/dz2",
                 {"dL/dW2": rec.get("dL_dW2")[0], "dL/db2": rec.get("dL_db2")[0]}),
            step("Pass the gradient down to the hidden activations through the same weights.",
                 "dL/dh = dL/dz2 * W2", {"dL/dh": rec.get("dL_dh")[0]}),
            step("The hidden sigmoids' local derivatives.", "dh/dz1 = h (1 - h)",
                 {"dh/dz1": rec.get("dh_dz1")[0]}),
            step("Chain them.", "dL/dz1 = dL/dh * dh/dz1", {"dL/dz1": rec.get("dL_dz1")[0]}),
            step("First-layer weights: row i of dL/dW1 is dL/dz1_i times the input x.",
                 "dL/dW1 = dL/dz1 x^T;   dL/db1 = dL/dz1",
                 {"dL/dW1": rec.get("dL_dW1"), "dL/db1": rec.get("dL_db1")}),
        ],
    )  # fmt: skip


def _section_transformer() -> Section:
    model, ids, targets = block_model_and_batch()
    logits = model(ids)
    reference_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, BLOCK_VOCAB), targets.reshape(-1)
    )
    reference_loss.backward()
    reference = {name: p.grad for name, p in model.named_parameters()}
    loss, ours = model_gradients(model, ids, targets)
    rows = [
        [c.name, "x".join(map(str, reference[c.name].shape)), f"{c.ours_norm:.6e}",
         f"{c.reference_norm:.6e}",
         "exactly 0 in theory" if c.structurally_zero else f"{c.rel_error:.1e}"]
        for c in compare_gradients(ours, reference)
    ]  # fmt: skip
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_fn() -> torch.Tensor:
        return gpt_loss_and_gradients(params, model.config, ids, targets)[0]

    fd_rows = []
    for name, index in FD_COORDINATES:
        numeric = finite_difference(loss_fn, params[name], index)
        fd_rows.append(
            [name, str(list(index)), f"{float(ours[name][index]):.9e}", f"{numeric:.9e}"]
        )
    return Section(
        "The same machinery on a transformer block",
        [
            Step(
                "A GPT-2 block is more layers of the same kind, each with a hand-written "
                "backward pass: embedding lookup (gradients scattered back to the rows used), "
                "LayerNorm, linear layers, GELU, causal attention (softmax's Jacobian), "
                "residual connections (the gradient passes straight through and the branch's "
                "gradient is added), and the tied head (the embedding table receives gradient "
                "from both ends).",
                formula="dL/dx = dL/dy + dL/dy * dBranch/dx   (residual y = x + Branch(x))",
            ),
            Step(
                "A one-block model (float64) on a batch of 2 x 5 tokens: gradients computed "
                "with no autograd, compared tensor by tensor with autograd run on the library's "
                "DecoderLM. The key projection's bias has gradient exactly 0 (adding the same "
                "q.b_k to every score of a row does not change the softmax): both sides give "
                "rounding noise there.",
                formula="relative error = ||ours - autograd|| / ||autograd||  (target < 1e-8)",
                values={
                    "loss (hand-written forward)": float(loss),
                    "loss (DecoderLM + torch cross_entropy)": float(reference_loss.detach()),
                    "gradient check": Table(
                        ["parameter", "shape", "||ours||", "||autograd||", "rel. error"], rows
                    ),
                },
                decimals=6,
            ),
            Step(
                "Finite differences need no derivatives at all: nudge one weight by +-h and "
                "watch the loss. They agree with the backward pass to about 1e-9, the accuracy "
                "of the finite difference itself (its error shrinks like h^2).",
                formula="dL/dw ~ (L(w + h) - L(w - h)) / 2h,   h = 1e-5",
                values={
                    "finite differences": Table(
                        ["parameter", "index", "backprop", "finite difference"], fd_rows
                    )
                },
            ),
        ],
    )


def build() -> Lesson:
    run = network_run()
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_what_it_is(),
            _section_chain_rule(),
            _section_forward(run),
            _section_loss(run),
            _section_backward(),
            _section_backprop_in_python(run),
            _section_numeric(run.rec),
            _section_update(run),
            _section_transformer(),
        ],
    )
