"""Lesson "rmsnorm": LayerNorm and RMSNorm side by side, with a speed measurement.

Every normalized number is what the library's `LayerNorm` / `RMSNorm` recorded. The timing runs
the same two classes (written-out steps, then their fused single-kernel path) on a batch of
activations when the lesson is built, so it reflects this machine at that moment.
"""

from __future__ import annotations

import time

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.source import code_block
from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.layers.norm import LayerNorm, RMSNorm
from llm_internals.models.published import model_config, parameter_counts
from llm_internals.trace import recording

INFO = LessonInfo(
    name="rmsnorm",
    title="RMSNorm: normalization without the mean",
    summary="LayerNorm recap, RMSNorm, a worked example, a measured speed comparison, and where "
    "the norm sits in a pre-norm block.",
)

EXAMPLE = [2.0, -1.0, 0.5, 3.0]
GAIN = [1.0, 0.5, 2.0, 1.0]
EPS = 1e-6
TIMING_SHAPE = (1024, 1024)  # e.g. 2 sequences x 512 tokens, d_model 1024
TIMING_REPEATS = 20
SUMMARY_MODEL = "llama-3-8b"


def _run(norm: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with recording() as rec, torch.no_grad():
        norm(x)
    return {name: rec.get(name) for name in rec.names()}


def layer_norm(dim: int) -> LayerNorm:
    norm = LayerNorm(dim, eps=EPS)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(GAIN))
    return norm


def rms_norm(dim: int) -> RMSNorm:
    norm = RMSNorm(dim, eps=EPS)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(GAIN))
    return norm


def best_times_ms(norms: list[torch.nn.Module], x: torch.Tensor) -> list[float]:
    """The fastest of TIMING_REPEATS calls of each norm, in ms. Calls alternate between the
    norms so that both see the same background load; one warm-up call each."""
    best = [float("inf")] * len(norms)
    with torch.no_grad():
        for norm in norms:
            norm(x)
        for _ in range(TIMING_REPEATS):
            for i, norm in enumerate(norms):
                start = time.perf_counter()
                norm(x)
                best[i] = min(best[i], time.perf_counter() - start)
    return [1000 * t for t in best]


def timings() -> list[list]:
    """[path, LayerNorm ms, RMSNorm ms, LayerNorm / RMSNorm] for written-out and fused paths."""
    x = torch.randn(TIMING_SHAPE, generator=torch.Generator().manual_seed(0))
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: threads fighting over a busy CPU distort small ops
    try:
        for fused in (False, True):
            ln, rms = LayerNorm(TIMING_SHAPE[1]), RMSNorm(TIMING_SHAPE[1])
            ln.fused = rms.fused = fused
            ln_ms, rms_ms = best_times_ms([ln, rms], x)
            path = "torch kernels (F.layer_norm, F.rms_norm)" if fused else "written-out steps"
            rows.append([path, ln_ms, rms_ms, ln_ms / rms_ms])
    finally:
        torch.set_num_threads(threads)
    return rows


def pre_norm_flow() -> list[list]:
    """The order of recorded steps in the first block of a tiny Llama-style model."""
    model = tiny_decoder(0, vocab_size=32, n_layers=1, max_seq_len=8)
    shown = {"embedding": "residual stream h", "norm_output": "RMSNorm(h)",
             "attention_output": "Attention(RMSNorm(h))",
             "residual_after_attention": "h + Attention(RMSNorm(h))",
             "ffn_output": "FFN(RMSNorm(h))", "block_output": "h + FFN(RMSNorm(h))"}  # fmt: skip
    with recording() as rec, torch.no_grad():
        model(torch.arange(6)[None])
    rows, after_block = [], False
    for record in rec.records:
        if record.name in shown:
            rms = float(record.value.pow(2).mean(-1).sqrt().mean())
            label = "final RMSNorm(h)" if after_block else shown[record.name]
            rows.append([label, record.name, rms])
            after_block = after_block or record.name == "block_output"
    return rows


def timing_verdict(rows: list[list]) -> str:
    """One sentence saying what this run measured (the direction is not assumed)."""
    (_, ln_steps, rms_steps, _), (_, ln_fused, rms_fused, _) = rows
    steps = f"Written out, RMSNorm took {rms_steps / ln_steps:.2f}x LayerNorm's time. "
    fused = f"With torch's kernels RMSNorm took {rms_fused / ln_fused:.2f}x LayerNorm's time"
    if rms_fused > ln_fused:
        fused += (
            ": on this CPU torch's LayerNorm is one optimized kernel while its rms_norm is "
            "assembled from several operations, so the saving only shows when both are fused "
            "equally well (as in GPU kernels written for LLM training and serving)."
        )
    return steps + fused + ("" if fused.endswith(".") else ".")


def _section_normalize(x) -> Section:
    scaled = _run(rms_norm(4), torch.cat([x * 0.1, x, x * 100]))
    return Section(
        "Why normalize",
        [
            Step(
                "A transformer adds each layer's output to a residual stream, dozens of "
                "times. Without control the vectors' size drifts from layer to layer, and "
                "training becomes unstable. A norm rescales each token's vector to a fixed "
                "size before it enters a sublayer. The same vector at three scales gives "
                "the same normalized result (eps inside the root changes it only for vectors "
                "that are nearly zero):",
                values={
                    "inputs: x * 0.1, x, x * 100": torch.cat([x * 0.1, x, x * 100]),
                    "RMSNorm outputs": scaled["norm_output"],
                },
            )
        ],
    )


def _section_layernorm_recap(x, ln) -> Section:
    return Section(
        "LayerNorm recap",
        [
            Step(
                "LayerNorm (GPT-2, BERT) subtracts the vector's mean, divides by its "
                "standard deviation, then applies a learned gain and bias.",
                formula="LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * g + b",
                values={
                    "x": x[0],
                    "mean": ln["norm_mean"][0],
                    "var": ln["norm_variance"][0],
                    "normalized": ln["normalized"][0],
                    "g": torch.tensor(GAIN),
                    "output (b = 0)": ln["norm_output"][0],
                },
            )
        ],
    )


def _section_rmsnorm() -> Section:
    return Section(
        "RMSNorm",
        [
            Step(
                "RMSNorm (Zhang and Sennrich, 2019; Llama, Mistral, Qwen) skips the mean and "
                "the bias: it divides by the root mean square only. eps sits inside the "
                "square root and the statistic is computed in float32, as in HF Llama.",
                formula="RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g",
            )
        ],
    )


def _section_numeric_example(rms) -> Section:
    return Section(
        "A numeric example",
        [
            Step(
                f"x = {EXAMPLE}, g = {GAIN}, eps = {EPS:g}.",
                values={
                    "mean(x^2)": rms["norm_mean_square"][0],
                    "rms = sqrt(mean(x^2) + eps)": rms["norm_mean_square"][0].add(EPS).sqrt(),
                    "x / rms": rms["normalized"][0],
                    "times g": rms["norm_output"][0],
                },
            )
        ],
    )


def _section_code(rms) -> Section:
    return Section(
        "RMSNorm in code",
        [
            Step(
                "The library's RMSNorm, which produced every number above: the mean square "
                "over the last dimension, a reciprocal square root, the learned gain. "
                "Half-precision inputs are normalized in float32 and cast back; `fused` "
                "switches to torch's single-kernel F.rms_norm.\n\n" + code_block(RMSNorm),
                values={"RMSNorm(x) for the example": rms["norm_output"][0]},
            )
        ],
    )


def summary_rows() -> list[list]:
    """LayerNorm vs RMSNorm at a published model's width, parameters counted on the modules."""
    config = model_config(SUMMARY_MODEL)
    d = config.d_model

    def count(norm: torch.nn.Module) -> int:
        return sum(p.numel() for p in norm.parameters())

    norms_in_model = parameter_counts(SUMMARY_MODEL)["norms"]
    return [
        ["statistics per vector", "mean and variance", "mean square"],
        ["learned vectors", "gain and bias", "gain"],
        [f"parameters per norm at d_model {d:,}", count(LayerNorm(d)), count(RMSNorm(d))],
        [
            f"norm parameters in {SUMMARY_MODEL} ({config.n_layers} layers)",
            norms_in_model * count(LayerNorm(d)) // count(RMSNorm(d)),
            norms_in_model,
        ],
    ]


def _section_summary() -> Section:
    return Section(
        "Summary",
        [
            Step(
                "RMSNorm is LayerNorm without the mean: it rescales each vector to unit root "
                "mean square, with a learned gain and no bias. It keeps what matters for "
                "training stability (a fixed scale at every layer's input), computes one "
                "statistic instead of two, and is what Llama, Mistral, Qwen and Gemma use, "
                "before each sublayer (pre-norm) and once before the output head.",
                formula="LayerNorm(x) = g * (x - mean) / sqrt(var + eps) + b;   "
                "RMSNorm(x) = g * x / sqrt(mean(x^2) + eps)",
                values={
                    "LayerNorm vs RMSNorm": Table(["", "LayerNorm", "RMSNorm"], summary_rows())
                },
            )
        ],
    )


def _section_differences(x, ln, rms) -> Section:
    centered = x - x.mean()
    ln_c, rms_c = _run(layer_norm(4), centered), _run(rms_norm(4), centered)
    return Section(
        "Differences",
        [
            Step(
                "LayerNorm's output has mean 0 and unit variance (before g); RMSNorm's has "
                "unit mean square but keeps the input's mean direction. For an input whose "
                "mean is already 0 the two agree. RMSNorm has d parameters instead of 2d "
                "and one reduction instead of two.",
                values={
                    "LayerNorm(x) / g": ln["normalized"][0],
                    "RMSNorm(x) / g": rms["normalized"][0],
                    "x - mean(x)": centered[0],
                    "LayerNorm(x - mean) / g": ln_c["normalized"][0],
                    "RMSNorm(x - mean) / g": rms_c["normalized"][0],
                },
            )
        ],
    )


def _section_modern_llms_prefer() -> Section:
    timing_rows = timings()
    return Section(
        "Why modern LLMs prefer it",
        [
            Step(
                "Zhang and Sennrich found that re-centering contributes little to quality "
                "while re-scaling does the work; dropping it saves a reduction and a "
                f"subtraction. Measured now on a {TIMING_SHAPE[0]} x {TIMING_SHAPE[1]} "
                f"float32 batch on one CPU thread (best of {TIMING_REPEATS}; the machine may "
                "be shared with other work, so treat the ratio as indicative).",
                values={
                    "time per call (ms)": Table(
                        ["path", "LayerNorm", "RMSNorm", "LayerNorm / RMSNorm"], timing_rows
                    ),
                    "verdict": timing_verdict(timing_rows),
                },
                decimals=3,
            )
        ],
    )


def _section_pre_norm() -> Section:
    return Section(
        "Where it sits: pre-norm",
        [
            Step(
                "Modern decoders normalize the input of each sublayer and add the result "
                "to the un-normalized stream (pre-norm), plus once more before the output "
                "head. The original Transformer normalized after the addition (post-norm), "
                "which needs learning-rate warm-up to train deep stacks. Recorded in a tiny "
                "Llama-style model, with the mean RMS of each value: the norm's outputs "
                "are at RMS 1 while the stream keeps its own scale.",
                formula="h = h + Attention(RMSNorm(h));   h = h + FFN(RMSNorm(h))",
                values={
                    "one block": Table(["value", "recorded as", "mean RMS"], pre_norm_flow())
                },  # fmt: skip
            )
        ],
    )


def build() -> Lesson:
    x = torch.tensor([EXAMPLE])
    ln = _run(layer_norm(4), x)
    rms = _run(rms_norm(4), x)
    sections = [
        _section_normalize(x),
        _section_layernorm_recap(x, ln),
        _section_rmsnorm(),
        _section_numeric_example(rms),
        _section_code(rms),
        _section_differences(x, ln, rms),
        _section_modern_llms_prefer(),
        _section_pre_norm(),
        _section_summary(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
