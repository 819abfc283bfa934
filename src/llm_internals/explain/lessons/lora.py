"""Lesson "lora": fine-tuning a frozen model through a low-rank update B A, and QLoRA.

Every number comes from the real code: parameter counts of a published 7B model from the
project's table of published shapes (`models.published`); `adapters.LoraLinear` (init, scaling,
forward, merge) on a real 4x4 layer trained one step with autograd; `adapters.inject_lora` on one
block of Llama-2-7B built on torch's meta device (shapes only, no memory) and on the lesson's
model; `merge_adapter` / `unmerge_adapter` on a tiny decoder after a few training steps; and
`adapters.training_bytes` on the lesson's model in fp32, with fp32 LoRA and with an NF4 base
(`adapters.qlora.quantize_base_nf4`). The models have random weights; the mechanics are the point.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llm_internals.adapters import (
    LoraLinear,
    LoraSettings,
    inject_lora,
    lora_layers,
    merge_adapter,
    resolve_targets,
    trainable_parameters,
    training_bytes,
    unmerge_adapter,
)
from llm_internals.adapters.qlora import quantize_base_nf4
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.models import DecoderLM, published
from llm_internals.quant import nf4

INFO = LessonInfo(
    name="lora",
    title="LoRA and QLoRA: fine-tuning a low-rank update instead of the whole model",
    summary="What full fine-tuning costs in memory, the update delta W = B A of rank r, its "
    "initialisation and scaling, one real training step on a 4x4 layer, where adapters go in a "
    "transformer, merging them back, and QLoRA's NF4 base, measured.",
)

BIG = "llama-2-7b"
GIB = 2**30
RANKS = (1, 4, 8, 16, 64)
TARGET_SETS = ("q,v", "q,k,v,o", "all-linear")
TARGET_R, TARGET_ALPHA = 8, 16.0
QLORA_R = 64  # the QLoRA paper's rank
# (label, bytes per weight, bytes per gradient): Adam's m and v are fp32 (8 bytes) in both
PRECISIONS = (("fp32 weights and gradients", 4, 4), ("bf16 weights and gradients", 2, 2))
ADAM_BYTES = 8
STEP_R, STEP_ALPHA = 2, 4.0  # the step-by-step layer: scale 2
EXAMPLE_R, EXAMPLE_ALPHA, EXAMPLE_LR = 1, 2.0, 0.5  # the 4x4 example: scale 2
LESSON_SHAPE = dict(d_model=128, n_layers=4, n_heads=4, d_ff=352)  # widths fit NF4's blocks of 64
MERGE_TEXT = "to be, or not to be, that is the question"
MERGE_STEPS, MERGE_LR = 5, 0.05


def example_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 4x4 example: base weight W, inputs x (3 rows), targets y = x W_target^T where
    W_target differs from W by a rank-1 matrix (so a rank-1 update can fit it)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.round(torch.randn(4, 4, generator=g) * 10) / 10
    x = torch.round(torch.randn(3, 4, generator=g) * 10) / 10
    u, v = torch.tensor([1.0, 0.0, -1.0, 0.5]), torch.tensor([0.5, 0.5, 0.0, -0.5])
    return weight, x, x @ (weight + torch.outer(u, v)).T


class LinearShape(nn.Module):
    """Stands in for a frozen (out x in) linear layer of a big model whose weights the lesson
    does not need: LoraLinear reads only the shape (and the device of a buffer). Building the
    7B shapes for real would take gigabytes; on torch's meta device, seconds of imports."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        self.register_buffer("device_marker", torch.zeros(0))


def linear_shapes(name: str) -> dict[str, tuple[int, int]]:
    """(out, in) of each linear layer of one decoder block of published model `name`, as
    models/decoder.py builds them (GQA: k and v have n_kv_heads heads)."""
    c = published.model_config(name)
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    return {"q_proj": (q, c.d_model), "k_proj": (kv, c.d_model), "v_proj": (kv, c.d_model),
            "o_proj": (c.d_model, q), "gate_proj": (c.d_ff, c.d_model),
            "up_proj": (c.d_ff, c.d_model), "down_proj": (c.d_model, c.d_ff)}  # fmt: skip


def adapter_params_of_shape(out_features: int, in_features: int, r: int) -> int:
    """Trainable parameters of a real LoraLinear of rank r around an (out x in) layer."""
    layer = LoraLinear(LinearShape(out_features, in_features))
    layer.add_adapter("default", LoraSettings(r=r, alpha=2.0 * r))
    return sum(p.numel() for p in layer.parameters() if p.requires_grad)


def big_adapter_params(targets: str, r: int = TARGET_R) -> int:
    """Trainable LoRA parameters at rank r on `targets` of the whole published BIG."""
    leaves, _ = resolve_targets(targets)
    shapes = linear_shapes(BIG)
    per_layer = sum(adapter_params_of_shape(*shapes[leaf], r) for leaf in leaves)
    return per_layer * published.model_config(BIG).n_layers


def lesson_model() -> DecoderLM:
    """The lesson's model: Llama-style (RoPE, RMSNorm, SwiGLU), 4 layers, d_model 128."""
    return tiny_decoder(0, **LESSON_SHAPE)


def lesson_adapter_params(targets: str) -> int:
    """Trainable parameters after the real inject_lora (rank TARGET_R) on the lesson's model."""
    model = lesson_model()
    inject_lora(model, LoraSettings(r=TARGET_R, alpha=TARGET_ALPHA), targets)
    return trainable_parameters(model)


def _section_big_picture() -> Section:
    total = published.parameter_counts(BIG)["total"]
    qv = big_adapter_params("q,v")
    return Section(
        "Big picture",
        [
            Step(
                "Fine-tuning adapts a pretrained model to a task. Full fine-tuning updates every "
                "weight, so it needs gradients and optimizer state for every weight. LoRA "
                "(Hu et al. 2021) freezes the pretrained weights and learns, for a few chosen "
                "layers, a small update of low rank r. It trains a tiny fraction of the "
                "parameters, keeps one shared base for many tasks (an adapter is megabytes), "
                "and can be merged into the weights so inference costs nothing extra. QLoRA "
                "(Dettmers et al. 2023) also stores the frozen base in 4 bits (NF4).",
                formula="h = W0 x + (alpha / r) B A x,   W0 frozen,  A: r x d_in,  B: d_out x r",
            ),
            Step(
                f"For {published.resolve(BIG)} with adapters of rank {TARGET_R} on W_q and "
                "W_v (the paper's choice), counted by the real `LoraLinear` on the model's "
                "layer shapes:",
                values={
                    "parameters of the model": total,
                    "trainable LoRA parameters": qv,
                    "trainable share (%)": round(100 * qv / total, 4),
                },
            ),
        ],
    )


def _section_full_cost() -> Section:
    total = published.parameter_counts(BIG)["total"]
    rows = []
    for label, weight_bytes, grad_bytes in PRECISIONS:
        parts = (total * weight_bytes, total * grad_bytes, total * ADAM_BYTES // 2,
                 total * ADAM_BYTES // 2)  # fmt: skip
        rows.append([label, *(round(p / GIB, 1) for p in parts), round(sum(parts) / GIB, 1),
                     weight_bytes + grad_bytes + ADAM_BYTES])  # fmt: skip
    return Section(
        "Why full fine-tuning is expensive",
        [
            Step(
                f"Training with Adam keeps, for every trainable parameter, the weight, its "
                f"gradient and two moment estimates m and v (kept in fp32 even when weights are "
                f"bf16). For {published.resolve(BIG)} ({total:,} parameters, from the published "
                "config.json in `models.published`), before a single activation is stored:",
                formula="bytes = params x (bytes/weight + bytes/gradient + 4 (m) + 4 (v))",
                values={
                    "GiB for full fine-tuning": Table(
                        [
                            "precision",
                            "weights",
                            "gradients",
                            "Adam m",
                            "Adam v",
                            "total",
                            "bytes/param",
                        ],
                        rows,
                    )  # fmt: skip
                },
                decimals=1,
            ),
            Step(
                f"Even the bf16 case is {rows[1][5]} GiB before a single activation, most of an "
                "80 GiB GPU, and mixed-precision training usually keeps an fp32 master copy of "
                "the weights as well (4 more bytes per parameter). So full fine-tuning of a 7B "
                "model is spread over several GPUs, while bf16 inference needs only the weights "
                "column.",
            ),
        ],
    )


def _section_core_idea() -> Section:
    config = published.model_config(BIG)
    d = config.d_model
    rows = []
    for r in RANKS:
        params = adapter_params_of_shape(d, d, r)
        rows.append([r, params, round(100 * params / (d * d), 3)])
    return Section(
        "The core idea: delta W = B A",
        [
            Step(
                "Fine-tuning changes W0 into W0 + delta W. The LoRA paper's hypothesis is that the "
                "change has low 'intrinsic rank', so it is written as a product of two thin "
                "matrices: B (d_out x r) times A (r x d_in). Only A and B are trained; their "
                "product has rank at most r, and costs r (d_in + d_out) numbers instead of "
                "d_in x d_out.",
                formula="delta W = B A;  params: r (d_in + d_out)  vs  d_in d_out",
            ),
            Step(
                f"One attention projection of {published.resolve(BIG)} (d_in = d_out = {d}): "
                "trainable parameters of the real `LoraLinear` at each rank.",
                values={
                    f"full matrix ({d} x {d})": d * d,
                    "LoRA": Table(["r", "trainable", "% of the matrix"], rows),
                },
                decimals=3,
            ),
        ],
    )


def _section_step_by_step() -> Section:
    base = tiny_decoder(0).blocks[0].attn.q_proj
    layer = LoraLinear(base)
    torch.manual_seed(1)
    layer.add_adapter("default", LoraSettings(r=STEP_R, alpha=STEP_ALPHA))
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base_out, lora_out = base(x), layer(x)
        down = layer.lora_A["default"](x)
    settings = layer.settings["default"]
    rs = LoraSettings(r=STEP_R, alpha=STEP_ALPHA, use_rslora=True)
    return Section(
        "Step by step",
        [
            Step(
                f"1. Initialise. The real `LoraLinear` wraps layer 0's W_q of the tiny decoder "
                f"({layer.out_features} x {layer.in_features}), r = {STEP_R}. A is drawn "
                "Kaiming-uniform (a = sqrt 5, nn.Linear's default, as in PEFT): uniform in "
                "+-1/sqrt(d_in). B starts at exactly zero.",
                formula="A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)),  B = 0",
                values={"A": a, "B": b, "bound 1/sqrt(d_in)": layer.in_features**-0.5},
            ),
            Step(
                "2. Because B = 0, the layer's output at the start equals the base output "
                "exactly: training starts from the pretrained model, not from a perturbed one.",
                values={
                    "max |LoRA output - base output|": float((lora_out - base_out).abs().max())
                },
            ),
            Step(
                "3. Scale. The update is multiplied by s = alpha / r, so changing r does not "
                "require re-tuning the learning rate much (the paper sets alpha once). rsLoRA "
                "divides by sqrt(r) instead, which keeps the update's size stable at large r.",
                formula="s = alpha / r   (rsLoRA: alpha / sqrt(r))",
                values={
                    "alpha": STEP_ALPHA,
                    "r": STEP_R,
                    "s": settings.scaling,
                    "s (rsLoRA)": rs.scaling,
                },  # fmt: skip
            ),
            Step(
                "4. Forward. The input goes down to r dimensions through A, back up through B, "
                "is scaled and added to the frozen path. The full d_out x d_in delta W is never "
                "formed. Dropout, when set, applies only to the adapter's input.",
                formula="h = x W0^T + s (x A^T) B^T",
                values={
                    "x A^T (3 x r)": down,
                    "h - x W0^T (zero while B = 0)": lora_out - base_out,
                },
            ),
        ],
    )


def example_step() -> dict[str, torch.Tensor | float]:
    """One real training step of a LoRA (r = 1) on the 4x4 example: MSE loss, plain SGD."""
    weight, x, y = example_tensors()
    base = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        base.weight.copy_(weight)
    layer = LoraLinear(base)
    torch.manual_seed(0)
    layer.add_adapter("default", LoraSettings(r=EXAMPLE_R, alpha=EXAMPLE_ALPHA))
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    a0, b0 = a.detach().clone(), b.detach().clone()
    loss = ((layer(x) - y) ** 2).mean()
    loss.backward()
    grad_a, grad_b = a.grad.clone(), b.grad.clone()
    with torch.no_grad():
        for p in (a, b):
            p -= EXAMPLE_LR * p.grad
            p.grad = None
    after = ((layer(x) - y) ** 2).mean()
    after.backward()
    return dict(W=weight, x=x, y=y, A0=a0, B0=b0, loss0=loss.item(), grad_A=grad_a,
                grad_B=grad_b, A1=a.detach().clone(), B1=b.detach().clone(),
                delta=layer.delta_weight("default"), loss1=after.item(),
                grad_A1=a.grad.clone())  # fmt: skip


def _section_example() -> Section:
    e = example_step()
    return Section(
        "A small numeric example",
        [
            Step(
                f"A 4x4 weight W0, rank r = {EXAMPLE_R}, alpha = {EXAMPLE_ALPHA} (s = "
                f"{EXAMPLE_ALPHA / EXAMPLE_R}). A is 1x4 and B is 4x1: 8 trainable numbers for "
                "16 weights. The targets y come from W0 plus a rank-1 change, so a rank-1 "
                "update can reach them.",
                values={"W0": e["W"], "x": e["x"], "y": e["y"], "A": e["A0"], "B": e["B0"]},
            ),
            Step(
                "Forward and backward (mean squared error, autograd through the real layer). "
                "With B = 0 the gradient of A is exactly zero (it is s B^T times something); only "
                "B moves in the first step.",
                formula="dL/dB = s g^T (x A^T),  dL/dA = s B^T g^T x,  g = dL/dh",
                values={"loss": e["loss0"], "dL/dA": e["grad_A"], "dL/dB": e["grad_B"]},
            ),
            Step(
                f"One SGD step with learning rate {EXAMPLE_LR}. The update delta W = s B A is a "
                "4x4 matrix of rank 1 (every row a multiple of A); the loss drops, and now that B "
                "is non-zero A gets a gradient too.",
                formula="B <- B - lr dL/dB;   delta W = s B A",
                values={
                    "B after the step": e["B1"],
                    "delta W = s B A": e["delta"],
                    "W0 + delta W": e["W"] + e["delta"],
                    "loss after": e["loss1"],
                    "dL/dA at step 2": e["grad_A1"],
                },  # fmt: skip
            ),
        ],
    )


def _section_where() -> Section:
    big_total = published.parameter_counts(BIG)["total"]
    ours_total = sum(p.numel() for p in lesson_model().parameters())
    rows = []
    for targets in TARGET_SETS:
        big = big_adapter_params(targets)
        ours = lesson_adapter_params(targets)
        rows.append([targets, big, round(100 * big / big_total, 3), ours,
                     round(100 * ours / ours_total, 3)])  # fmt: skip
    return Section(
        "Where LoRA is applied in a transformer",
        [
            Step(
                "Any linear layer can get an adapter. The paper adapted only W_q and W_v; "
                "later work (QLoRA among it) found that adapting every linear layer of the "
                "blocks (attention q, k, v, o and the MLP's gate, up, down) matters more for "
                "quality than a larger r. Embeddings and the output head are usually left alone.",
            ),
            Step(
                f"Trainable parameters at r = {TARGET_R}: for {published.resolve(BIG)} the "
                "real `LoraLinear` on each target's shape, times the layers; for the lesson's "
                "model (4 layers, d_model 128, d_ff 352, Llama-style) the real `inject_lora`. "
                "Note that Llama-2-7B's MLP is wider than its attention, so "
                "all-linear more than doubles q,k,v,o.",
                formula="per layer: sum over targets of r (d_in + d_out)",
                values={
                    "trainable parameters": Table(
                        ["targets", BIG, "% of 7B", "lesson model", "% of lesson model"], rows
                    )
                },
                decimals=3,
            ),
        ],
    )


def trained_tiny() -> tuple[DecoderLM, torch.Tensor]:
    """The tiny decoder with LoRA on every linear layer, trained MERGE_STEPS steps on a line
    of text (next-character loss), so A and B are both non-zero."""
    tok = tiny_tokenizer()
    model = tiny_decoder(0)
    ids = torch.tensor([tok.encode(MERGE_TEXT)])
    torch.manual_seed(0)
    inject_lora(model, LoraSettings(r=2, alpha=4.0), "all-linear")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=MERGE_LR)
    for _ in range(MERGE_STEPS):
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), ids


def _section_merge() -> Section:
    model, ids = trained_tiny()
    layer = lora_layers(model)["blocks.0.attn.q_proj"]
    w0 = layer.base.weight.detach().clone()
    with torch.no_grad():
        unmerged = model(ids)
        merge_adapter(model)
        merged_weight = layer.base.weight.detach().clone()
        merged = model(ids)
        unmerge_adapter(model)
        restored = model(ids)
    return Section(
        "Merging back",
        [
            Step(
                "After training, delta W = s B A can be added into the frozen weight once. The "
                "merged layer is a plain linear layer again: inference has no extra matmuls "
                "and no extra latency. Unmerging subtracts the same product, so one base can "
                "switch adapters (or keep them separate and pick one per request).",
                formula="W <- W0 + s B A;   unmerge: W <- W - s B A",
            ),
            Step(
                f"The tiny decoder with adapters (r = 2) on all its linear layers after "
                f"{MERGE_STEPS} Adam steps on one line of text: its logits with the adapters "
                "separate and after the real `merge_adapter`, and the weight back after "
                "`unmerge_adapter`. (Layer 0's W_q shown; differences are float32 rounding.)",
                values={
                    "W0 (layer 0 W_q)": w0,
                    "merged W": merged_weight,
                    "max |logits merged - unmerged|": float((merged - unmerged).abs().max()),
                    "max |logits after unmerge - unmerged|": float(
                        (restored - unmerged).abs().max()
                    ),
                    "max |W after unmerge - W0|": float((layer.base.weight - w0).abs().max()),
                },
                decimals=8,
            ),
        ],
    )


def memory_rows() -> list[list]:
    """training_bytes of the lesson's model: full fine-tuning, LoRA and QLoRA (all-linear)."""
    rows = []
    for label in ("full fine-tuning (fp32)", "LoRA (fp32 base)", "QLoRA (NF4 base)"):
        torch.manual_seed(0)
        model = lesson_model()
        if label.startswith("QLoRA"):
            quantize_base_nf4(model, double_quant=True)
        if not label.startswith("full"):
            inject_lora(model, LoraSettings(r=TARGET_R, alpha=TARGET_ALPHA), "all-linear")
        counted = training_bytes(model)
        rows.append([label, counted.trainable_params, counted.weights, counted.gradients,
                     counted.adam_states, counted.total])  # fmt: skip
    return rows


def _section_real_world() -> Section:
    rows = memory_rows()
    full, qlora = rows[0][-1], rows[2][-1]
    return Section(
        "Real-world use: QLoRA",
        [
            Step(
                "QLoRA stores the frozen base's linear weights in NF4: 16 values placed at the "
                "quantiles of a normal distribution, one absmax scale per block of 64 weights, "
                "and the scales themselves quantised to 8 bits (double quantisation). The "
                "weights are dequantised on the fly in every forward; gradients flow through "
                "them to the adapters, which stay in full precision. The paper's settings: "
                "r = 64, alpha = 16, adapters on all linear layers, paged AdamW.",
                formula="Y = X dequant(W_NF4)^T + s (X A^T) B^T",
            ),
            Step(
                f"Measured here by the real `training_bytes` on the lesson's model (adapters "
                f"r = {TARGET_R} on all linear layers; embeddings, norms and head stay fp32 "
                "and frozen; activations not counted). Bytes:",
                values={
                    "training memory": Table(
                        ["setup", "trainable", "weights", "gradients", "Adam m+v", "total"], rows
                    ),
                    "full / QLoRA": round(full / qlora, 2),
                },
                decimals=2,
            ),
            Step(
                f"The same accounting for {published.resolve(BIG)}, computed from its shapes "
                "(not measured): NF4 bytes as `quant.nf4` stores them, embeddings, norms and "
                "head in bf16, adapters at the paper's r = 64 on all linear layers. QLoRA's "
                "total fits a single 24 GiB GPU with room for activations. GiB:",
                values={
                    "training memory": Table(
                        ["setup", "trainable", "weights", "gradients", "Adam m+v", "total"],
                        big_rows(),
                    )
                },
                decimals=2,
            ),
        ],
    )


def nf4_bytes(numel: int) -> int:
    """Bytes of one matrix in quant.nf4 with double quantisation: packed codes (half a byte
    each), an int8 absmax per block, an fp32 scale per SCALE_BLOCK absmaxes, one fp32 mean."""
    blocks = numel // nf4.NF4_BLOCK
    return numel // 2 + blocks + 4 * math.ceil(blocks / nf4.SCALE_BLOCK) + 4


def big_rows() -> list[list]:
    """GiB for BIG: full fine-tuning in bf16, LoRA on a bf16 base and QLoRA, adapters at the
    paper's r = 64 on all linear layers in fp32 (4 + 4 + 8 bytes per adapter parameter)."""
    config = published.model_config(BIG)
    total = published.parameter_counts(BIG)["total"]
    matrices = [out * inp for out, inp in linear_shapes(BIG).values()]
    linear = sum(matrices) * config.n_layers
    adapters = big_adapter_params("all-linear", QLORA_R)
    nf4_base = sum(nf4_bytes(n) for n in matrices) * config.n_layers + 2 * (total - linear)
    setups = [
        ("full fine-tuning (bf16, fp32 Adam)", total, 2 * total, 2 * total, 8 * total),
        ("LoRA r = 64 (bf16 base)", adapters, 2 * total + 4 * adapters, 4 * adapters,
         8 * adapters),
        ("QLoRA r = 64 (NF4 base)", adapters, nf4_base + 4 * adapters, 4 * adapters,
         8 * adapters),
    ]  # fmt: skip
    return [[label, trainable, *(round(b / GIB, 2) for b in (w, g, a, w + g + a))]
            for label, trainable, w, g, a in setups]  # fmt: skip


def _section_summary() -> Section:
    total = published.parameter_counts(BIG)["total"]
    big = big_rows()
    return Section(
        "Quick summary",
        [
            Step(
                f"- Full fine-tuning with Adam holds about 16 bytes per parameter in fp32 "
                f"({round(total * 16 / GIB)} GiB for {published.resolve(BIG)}), 12 with bf16 "
                "weights and gradients.\n"
                "- LoRA freezes W0 and learns delta W = B A of rank r: r (d_in + d_out) "
                "parameters per layer instead of d_in d_out.\n"
                "- A starts Kaiming-uniform, B at zero, so training starts exactly at the base "
                "model; the update is scaled by alpha / r (rsLoRA: alpha / sqrt r).\n"
                "- Adapters go on q and v (paper) or on every linear layer (QLoRA, usually "
                "better).\n"
                "- Merging adds s B A into W: same outputs, no inference cost; unmerging "
                "restores W.\n"
                "- QLoRA keeps the frozen base in NF4 (about 4.1 bits a weight with double "
                f"quantisation) and trains fp32 adapters on top: {big[2][-1]} GiB of training "
                f"state for the 7B model at r = {QLORA_R} against {big[0][-1]} GiB for full "
                "fine-tuning in bf16.",
            )
        ],
    )


def build() -> Lesson:
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_big_picture(),
            _section_full_cost(),
            _section_core_idea(),
            _section_step_by_step(),
            _section_example(),
            _section_where(),
            _section_merge(),
            _section_real_world(),
            _section_summary(),
        ],
    )
