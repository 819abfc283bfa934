"""Lesson "quantization": storing weights in 8, 4 or fewer bits, and what it costs in error.

Every number comes from the real code in `llm_internals.quant`: the integer, FP8 (torch's float8
dtypes), E2M1/MXFP4/NVFP4 and NF4 quantisers, the scheme registry (`quant.schemes`) for the
error of every scheme, `QuantizedLinear` (torch's int8/int4 CPU kernels, W8A8) timed on this CPU,
and `quant.qat` (straight-through estimator, QATLinear) for quantisation-aware training. The
weight matrix is layer 0's up projection of a seeded, untrained Llama-style decoder from
explain/tiny_models.py: normal(0, 0.02) as initialised, not a trained weight (trained weights have
heavier tails, which the outlier section imitates with one large value).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.quant import fp4, fp8, integer, nf4
from llm_internals.quant.linear import QuantizedLinear
from llm_internals.quant.qat import prepare_qat, straight_through
from llm_internals.quant.schemes import SCHEMES

INFO = LessonInfo(
    name="quantization",
    title="Quantization: weights in 8, 4 and fewer bits",
    summary="Bit layouts of int8, int4, FP8 and FP4 on real weights, scales per tensor, channel "
    "and block (MXFP4, NVFP4, NF4), the error of every scheme, outliers, weight-only vs W8A8, "
    "the speed of fewer bytes on this CPU, and quantisation-aware training.",
)

MATRIX_SHAPE = dict(d_model=256, n_layers=1, n_heads=4, d_ff=512)  # up_proj: 512 x 256
SHOWN = 4  # weights shown bit by bit
SLICE = (4, 64)  # the scales example: 4 rows, 64 inputs
OUTLIER = 50.0  # the outlier, in standard deviations of the matrix
OUTLIER_GRANULARITIES = (("int8", 8, "tensor"), ("int8", 8, "channel"), ("int4", 4, "tensor"),
                         ("int4", 4, "channel"), ("int4", 4, 32))  # fmt: skip
TOKENS, ACT_OUTLIER_CHANNEL, ACT_OUTLIER = 8, 5, 30.0
SPEED_N, SPEED_REPEATS = 2048, 20
SPEED_SCHEMES = ("bf16", "int8", "int4-g128")
QAT_SCHEME, QAT_STEPS, QAT_LR, QAT_EVERY = "mxfp4", 50, 0.01, 10
QAT_IN, QAT_OUT, QAT_SAMPLES = 128, 64, 512


def weight_matrix() -> torch.Tensor:
    """Layer 0's up projection (512 x 256) of a seeded Llama-style decoder, as initialised."""
    return tiny_decoder(0, **MATRIX_SHAPE).blocks[0].ffn.up_proj.weight.detach().clone()


def bits(code: int, widths: tuple[int, ...]) -> str:
    """The low sum(widths) bits of `code`, split into fields (sign, exponent, mantissa)."""
    total = sum(widths)
    text = format(code & ((1 << total) - 1), f"0{total}b")
    fields, start = [], 0
    for width in widths:
        fields.append(text[start : start + width])
        start += width
    return " ".join(fields)


def format_rows(weight: torch.Tensor) -> dict[str, tuple[str, list[list]]]:
    """For each format, (the scale's rule, rows of weight, w / scale, bits, stored value,
    dequantised) for the first SHOWN weights, with one scale for the whole matrix."""
    w = weight[0, :SHOWN]
    out = {}
    for name, b in (("int8", 8), ("int4", 4)):
        parts = integer.quantize_symmetric(weight, b, "tensor")
        scale = float(parts["scale"])
        codes = parts["qdata"][0, :SHOWN]
        rows = [[float(w[i]), float(w[i]) / scale, bits(int(codes[i]), (b,)), int(codes[i]),
                 int(codes[i]) * scale] for i in range(SHOWN)]  # fmt: skip
        out[name] = (f"scale = max|W| / {2 ** (b - 1) - 1}, two's complement", rows)
    for name, fmt, widths in (("FP8 E4M3", "e4m3", (1, 4, 3)), ("FP8 E5M2", "e5m2", (1, 5, 2))):
        parts = fp8.quantize_fp8(weight, fmt, "tensor")
        scale = float(parts["scale"])
        stored = parts["qdata"][0, :SHOWN]
        raw = stored.view(torch.uint8)
        rows = [[float(w[i]), float(w[i]) / scale, bits(int(raw[i]), widths),
                 float(stored[i].float()), float(stored[i].float()) * scale]
                for i in range(SHOWN)]  # fmt: skip
        largest = torch.finfo(fp8.FP8_DTYPES[fmt]).max
        out[name] = (f"scale = max|W| / {largest:g}, sign exponent mantissa", rows)
    scale = float(weight.abs().max()) / fp4.E2M1_MAX
    codes = fp4.encode_e2m1(w / scale)
    values = fp4.decode_e2m1(codes)
    rows = [[float(w[i]), float(w[i]) / scale, bits(int(codes[i]), (1, 2, 1)), float(values[i]),
             float(values[i]) * scale] for i in range(SHOWN)]  # fmt: skip
    out["FP4 E2M1"] = ("scale = max|W| / 6, sign exponent mantissa", rows)
    return out


def _section_formats(weight: torch.Tensor) -> Section:
    tables = {
        f"{name} ({rule})": Table(["weight", "w / scale", "bits", "stored", "dequantised"], rows)
        for name, (rule, rows) in format_rows(weight).items()
    }
    return Section(
        "Number formats",
        [
            Step(
                "A quantised weight is a small code plus a scale shared by many weights: w ~ "
                "code x scale. Integer codes are evenly spaced (int8: -127..127, int4: -7..7). "
                "Float codes have a sign, an exponent and a mantissa, so their steps grow with "
                "the magnitude: relative precision is the same for small and large weights "
                "(down to the subnormals).",
                formula="E4M3: (-1)^s 2^(e-7) (1 + m/8)   E5M2: (-1)^s 2^(e-15) (1 + m/4)   "
                "E2M1: (-1)^s 2^(e-1) (1 + m/2);  e = 0: subnormal, 2^(1-bias) m / 2^M",
            ),
            Step(
                f"The first {SHOWN} weights of row 0 of the lesson's matrix (512 x 256, normal "
                "init), each format with one scale for the whole matrix (torch's float8 dtypes "
                "for FP8, `quant.fp4.encode_e2m1` for FP4). Bits as stored; 'stored' is the "
                "value the bits decode to.",
                values=tables,
                decimals=5,
            ),
        ],
    )


def _section_scales(weight: torch.Tensor) -> Section:
    block = weight[: SLICE[0], : SLICE[1]]
    per = {g: integer.quantize_symmetric(block, 4, g)["scale"] for g in ("tensor", "channel", 32)}
    mx = fp4.quantize_mxfp4(block)
    nv = fp4.quantize_nvfp4(block)
    nf = nf4.quantize_nf4(block)
    rows = [
        ["int4 per tensor", f"all {block.numel()}", "fp32", 32 / block.numel()],
        ["int4 per channel", f"1 x {SLICE[1]}", "fp32", 32 / SLICE[1]],
        ["int4 per group of 32", "1 x 32", "fp32", 32 / 32],
        ["MXFP4", f"1 x {fp4.MX_BLOCK}", "E8M0 (8 bits)", 8 / fp4.MX_BLOCK],
        ["NVFP4", f"1 x {fp4.NV_BLOCK}", "E4M3 + one fp32", 8 / fp4.NV_BLOCK + 32 / block.numel()],
        ["NF4", f"{nf4.NF4_BLOCK} consecutive", "fp32 absmax", 32 / nf4.NF4_BLOCK],
    ]
    return Section(
        "Scales and blocks",
        [
            Step(
                "One scale for a whole tensor is cheap but must cover its largest value; a scale "
                "per output channel (row) or per group of g inputs follows the weights more "
                "closely at the cost of storing more scales.",
                formula="scale = max|w in group| / q_max;   overhead = scale bits / group size",
                values={
                    "int4 per-tensor scale": per["tensor"],
                    "int4 per-channel scales (rows)": per["channel"],
                    "int4 per-group-of-32 scales (rows x groups)": per[32],
                },
                decimals=6,
            ),
            Step(
                "The 4-bit float formats fix the block and the scale's own format. MXFP4 (OCP): "
                "blocks of 32, the scale a power of two stored as one exponent byte (E8M0, "
                "bias 127), 2^(floor(log2 max) - 2). NVFP4: blocks of 16, the scale in FP8 "
                "E4M3 times one fp32 scale per tensor. NF4 (QLoRA): blocks of 64 consecutive "
                "weights, an fp32 absmax each, codes at normal quantiles. Real scales of the "
                f"first {SLICE[0]} x {SLICE[1]} weights:",
                values={
                    "MXFP4 E8M0 bytes": mx["scale"],
                    "MXFP4 scales 2^(byte - 127)": torch.exp2(mx["scale"].float() - 127),
                    "NVFP4 E4M3 block scales": nv["scale"].float(),
                    "NVFP4 fp32 tensor scale": float(nv["scale2"]),
                    "NF4 absmax per block of 64": nf.absmax,
                    "scale overhead": Table(
                        ["scheme", "group", "scale format", "extra bits per weight"], rows
                    ),
                },
                decimals=6,
            ),
        ],
    )


def scheme_bits(parts: dict[str, torch.Tensor], numel: int) -> float:
    """Storage bits per weight of a scheme's parts (codes and scales together)."""
    return 8 * sum(p.numel() * p.element_size() for p in parts.values()) / numel


def error_rows(weight: torch.Tensor) -> list[list]:
    rows = []
    for name, scheme in SCHEMES.items():
        if scheme.activation_int8:  # W8A8 stores the same weights as int8
            continue
        parts = scheme.quantize(weight, "up_proj.weight")
        error = weight - scheme.dequantize(parts, tuple(weight.shape))
        relative = float(100 * error.norm() / weight.norm())
        bits_per_weight = round(scheme_bits(parts, weight.numel()), 3)
        rows.append([name, bits_per_weight, relative, float(error.abs().max())])
    return sorted(rows, key=lambda row: -row[1])


def _section_error(weight: torch.Tensor) -> Section:
    return Section(
        "Error vs bits",
        [
            Step(
                "Every scheme of `quant.schemes` (what `llm-internals quantize --scheme` takes) "
                f"on the lesson's {weight.shape[0]} x {weight.shape[1]} matrix: storage in bits "
                "per weight counted from the real parts (codes and scales), and the error of "
                "dequantise(quantise(W)). Halving the bits roughly multiplies the error by "
                "2^4 = 16 for integers; at 4 bits the block size and the code's shape (NF4's "
                "normal quantiles, E2M1's uneven grid) decide.",
                formula="relative error = ||W - dequant(quant(W))||_F / ||W||_F",
                values={
                    "error": Table(
                        ["scheme", "bits/weight", "relative error (%)", "max |error|"],
                        error_rows(weight),
                    )
                },
                decimals=5,
            )
        ],
    )


def with_outlier(weight: torch.Tensor) -> torch.Tensor:
    """`weight` with w[0, 0] set to OUTLIER standard deviations."""
    out = weight.clone()
    out[0, 0] = OUTLIER * weight.std()
    return out


def outlier_rows(weight: torch.Tensor) -> list[list]:
    """Error of the other weights (all but [0, 0]) with and without the outlier."""
    rows = []
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep[0, 0] = False
    for label, b, granularity in OUTLIER_GRANULARITIES:
        cells = [f"{label} per {granularity if isinstance(granularity, str) else 'group of 32'}"]
        for w in (weight, with_outlier(weight)):
            parts = integer.quantize_symmetric(w, b, granularity)
            restored = integer.dequantize_symmetric(parts, tuple(w.shape), granularity)
            error = (w - restored)[keep]
            cells.append(float(100 * error.norm() / w[keep].norm()))
        cells.append(float(100 * (parts["qdata"][keep] == 0).float().mean()))
        rows.append(cells)
    return rows


def _section_outliers(weight: torch.Tensor) -> Section:
    return Section(
        "Outliers",
        [
            Step(
                "Trained LLMs have a few weights (and activation channels) far larger than the "
                "rest. With one scale per tensor, that single value sets the step for every "
                "weight: at 4 bits the step becomes so coarse that most weights round to zero. "
                "Smaller groups confine the damage to the outlier's own row or group.",
                formula="step = max|w| / q_max:  one value 50 sigma  =>  step ~ 7 sigma at int4",
            ),
            Step(
                f"The lesson's matrix with w[0, 0] set to {OUTLIER:g} standard deviations "
                f"({float(with_outlier(weight)[0, 0]):.3f}); error measured on all the other "
                "weights, with symmetric `quant.integer` quantisation at each granularity.",
                values={
                    "relative error of the other weights (%)": Table(
                        [
                            "quantiser",
                            "no outlier",
                            "with the outlier",
                            "weights at code 0 (%, with the outlier)",
                        ],
                        outlier_rows(weight),
                    )  # fmt: skip
                },
                decimals=2,
            ),
        ],
    )


def activations(outlier: bool) -> torch.Tensor:
    """TOKENS activation rows of width 256; with `outlier`, channel 5 is 30x larger (the
    systematic outlier features LLM.int8 describes)."""
    x = torch.randn(TOKENS, MATRIX_SHAPE["d_model"], generator=torch.Generator().manual_seed(3))
    if outlier:
        x[:, ACT_OUTLIER_CHANNEL] *= ACT_OUTLIER
    return x


def w8a8_rows(weight: torch.Tensor) -> list[list]:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    layers = {"weight-only int8": QuantizedLinear.from_linear(linear, "int8"),
              "W8A8": QuantizedLinear.from_linear(linear, "w8a8")}  # fmt: skip
    quantised = {"weight-only int8": "weights (int8 per channel)",
                 "W8A8": "weights (per channel) and activations (int8 per token)"}  # fmt: skip
    rows = []
    with torch.no_grad():
        for name, layer in layers.items():
            cells = [name, quantised[name]]
            for outlier in (False, True):
                x = activations(outlier)
                reference = linear(x)
                cells.append(float(100 * (layer(x) - reference).norm() / reference.norm()))
            rows.append(cells)
    return rows


def _section_w8a8(weight: torch.Tensor) -> Section:
    return Section(
        "Weight-only vs W8A8",
        [
            Step(
                "Weight-only quantisation stores W in few bits and computes with full-precision "
                "activations (dequantised weights or a kernel that reads the codes): it saves "
                "memory and bandwidth, the cost of decoding. W8A8 quantises the activations too, "
                "per token, so the matmul itself runs on int8 (faster on hardware with int8 "
                "units), but an activation outlier channel then coarsens every other channel "
                "of its token.",
                formula="W8A8: y = (round(x / s_x) q_W^T) s_x s_W,  s_x = max|x_token| / 127",
            ),
            Step(
                f"The lesson's matrix as a layer (the real `QuantizedLinear`), {TOKENS} tokens "
                f"of normal activations, and the same with channel {ACT_OUTLIER_CHANNEL} "
                f"{ACT_OUTLIER:g}x larger. Relative error of the output against fp32:",
                values={
                    "output error (%)": Table(
                        ["layer", "quantised", "normal activations", "outlier channel"],
                        w8a8_rows(weight),
                    )
                },
                decimals=3,
            ),
        ],
    )


def best_ms(fn, repeats: int = SPEED_REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def speed_rows() -> list[list]:
    """One decode step's matmul (batch 1) through an SPEED_N x SPEED_N layer, one thread."""
    torch.manual_seed(0)
    linear = nn.Linear(SPEED_N, SPEED_N, bias=False)
    x = torch.randn(1, SPEED_N, generator=torch.Generator().manual_seed(4))
    runs = [("fp32", linear, torch.float32, linear.weight.numel() * 4)]
    layers = {name: QuantizedLinear.from_linear(linear, name) for name in SPEED_SCHEMES}
    for name, dtype in [(n, torch.bfloat16) for n in SPEED_SCHEMES] + [
        (n, torch.float32) for n in SPEED_SCHEMES[1:]
    ]:
        layer = layers[name]
        nbytes = sum(p.numel() * p.element_size() for p in layer.parts().values())
        runs.append((name, layer, dtype, nbytes))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        with torch.no_grad():
            reference = linear(x)
            for name, layer, dtype, nbytes in runs:
                xin = x.to(dtype)
                out = layer(xin).float()
                layer(xin)  # warm-up (int4 packs its kernel layout once)
                ms = best_ms(lambda layer=layer, xin=xin: layer(xin))
                error = float((out - reference).norm() / reference.norm())
                rows.append([name, str(dtype).removeprefix("torch."), nbytes, ms, error])
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        row.insert(4, round(rows[0][3] / row[3], 2))
    return rows


def _section_speed() -> Section:
    return Section(
        "Speed from fewer bytes",
        [
            Step(
                "Generating one token multiplies a single activation row by every weight: each "
                "weight is read once and used once, so the time is set by bytes moved, not by "
                "arithmetic. Fewer bytes per weight means proportionally less to read, if a "
                "kernel reads the codes directly instead of first writing a dequantised copy.",
                formula="time per token ~ weight bytes / memory bandwidth",
            ),
            Step(
                f"Measured just now on this CPU, one thread, batch 1, a {SPEED_N} x {SPEED_N} "
                "layer: fp32 `nn.Linear`, and the real `QuantizedLinear` with bf16, int8 "
                "(torch._weight_int8pack_mm) and int4-g128 (torch._weight_int4pack_mm_for_cpu), "
                "first with bf16 activations, then the int kernels with fp32 ones (slower: the "
                "last two rows). Best of "
                f"{SPEED_REPEATS}; your machine and its load change the numbers.",
                values={
                    "one matmul": Table(
                        [
                            "weights",
                            "activations",
                            "weight bytes",
                            "ms",
                            "speedup vs fp32",
                            "relative error",
                        ],
                        speed_rows(),
                    )  # fmt: skip
                },
                decimals=4,
            ),
        ],
    )


def qat_data() -> tuple[torch.Tensor, ...]:
    """The QAT task: a 128 -> 64 layer (the lesson matrix's corner) and correlated inputs with
    uneven channel scales, a training and a held-out set; targets are the fp32 layer's outputs."""
    weight = weight_matrix()[:QAT_OUT, :QAT_IN]
    g = torch.Generator().manual_seed(5)
    mix = torch.randn(QAT_IN, QAT_IN, generator=g) / QAT_IN**0.5
    scales = torch.exp(torch.randn(QAT_IN, generator=g))
    train, held = ((torch.randn(QAT_SAMPLES, QAT_IN, generator=g) * scales) @ mix
                   for _ in range(2))  # fmt: skip
    return weight, train, held


def qat_curve() -> list[list]:
    """Held-out MSE against the fp32 layer while QAT trains (SGD on the training set)."""
    weight, train, held = qat_data()
    base = nn.Linear(QAT_IN, QAT_OUT, bias=False)
    with torch.no_grad():
        base.weight.copy_(weight)
    model = nn.Sequential(base)
    prepare_qat(model, QAT_SCHEME)
    target_train, target_held = train @ weight.T, held @ weight.T
    rows = []
    for step in range(QAT_STEPS + 1):
        if step % QAT_EVERY == 0:
            with torch.no_grad():
                rows.append([step, float(((model(held) - target_held) ** 2).mean())])
        if step < QAT_STEPS:
            loss = ((model(train) - target_train) ** 2).mean()
            loss.backward()
            with torch.no_grad():  # plain SGD on the fp32 master weights
                for param in model.parameters():
                    param -= QAT_LR * param.grad
                    param.grad = None
    for row in rows:
        row.append(round(row[1] / rows[0][1], 3))
    return rows


def ste_example() -> dict[str, torch.Tensor]:
    """Eight weights through int4 fake quantisation with the straight-through estimator."""
    w = torch.tensor([0.31, -0.12, 0.05, 0.77, -0.48, 0.02, 0.66, -0.9]).reshape(1, 8)
    w.requires_grad_()
    quantized = integer.dequantize_symmetric(
        integer.quantize_symmetric(w, 4, "tensor"), tuple(w.shape), "tensor"
    )
    x = torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0, 3.0, -2.0, 1.5])
    fake = straight_through(w, quantized)
    loss = (fake @ x).pow(2).sum()
    loss.backward()
    return {"w": w.detach(), "Q(w) (int4 per tensor)": quantized.detach(),
            "forward uses": fake.detach(), "x": x, "dL/dw": w.grad}  # fmt: skip


def _section_qat() -> Section:
    curve = qat_curve()
    return Section(
        "Quantisation-aware training",
        [
            Step(
                "Post-training quantisation rounds the finished weights. Quantisation-aware "
                "training (QAT) keeps fp32 master weights but runs the forward pass with their "
                "quantised values, so the loss sees the rounding. Rounding has zero gradient "
                "almost everywhere; the straight-through estimator passes the gradient through "
                "it unchanged, as if it were the identity.",
                formula="w_q = w + (Q(w) - w).detach():  forward Q(w),  dL/dw = dL/dw_q",
            ),
            Step(
                "The real `quant.qat.straight_through` on 8 weights (int4, one scale): the "
                "forward pass uses Q(w), and the gradient reaching w is the one of the loss "
                "with respect to Q(w), here 2 (Q(w) . x) x.",
                formula="L = (w_q . x)^2",
                values=ste_example(),
            ),
            Step(
                f"QAT with {QAT_SCHEME.upper()} fake quantisation (`prepare_qat` wraps the "
                f"layer in a QATLinear): a {QAT_IN} -> {QAT_OUT} layer (a corner of the "
                "lesson's matrix) learns to reproduce its own fp32 outputs on correlated "
                f"inputs, plain SGD with learning rate {QAT_LR:g}. Step 0 is post-training "
                "quantisation; the held-out error falls as the master weights move to where "
                "rounding hurts the outputs least.",
                values={
                    "held-out MSE vs the fp32 layer": Table(
                        ["step", "MSE", "relative to step 0"], curve
                    )
                },
                decimals=8,
            ),
        ],
    )


def build() -> Lesson:
    weight = weight_matrix()
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_formats(weight),
            _section_scales(weight),
            _section_error(weight),
            _section_outliers(weight),
            _section_w8a8(weight),
            _section_speed(),
            _section_qat(),
        ],
    )
