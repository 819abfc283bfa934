"""The quantization lesson's numbers, recomputed independently: bit fields decoded by the formats'
formulas (and torch's float8 casts), scales from their definitions (absmax / q_max, MXFP4's
power of two, NVFP4's E4M3 block scale, NF4's 64-blocks), every scheme's round trip by a
reference written here from the formulas (NF4 from the published table), W8A8 by hand, storage
bytes from the shapes, the straight-through gradient in closed form, and the QAT curve by an
independent training loop (reference MXFP4, STE and SGD by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import quantization as lesson_module
from llm_internals.explain.registry import list_lessons

NF4_TABLE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])  # fmt: skip
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


@pytest.fixture(scope="module")
def weight():
    return lesson_module.weight_matrix()


def rows(table) -> list[list]:
    assert isinstance(table, Table)
    return table.rows


def grouped(w: torch.Tensor, group) -> torch.Tensor:
    if group == "tensor":
        return w.reshape(1, 1, -1)
    if group == "channel":
        return w.reshape(w.shape[0], 1, -1)
    return w.reshape(w.shape[0], -1, group)


def int_symmetric(w: torch.Tensor, bits: int, group) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, dequantised) with scale = absmax / (2^(b-1) - 1) per group."""
    g = grouped(w, group)
    scale = g.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    codes = torch.round(g / scale)
    return codes.reshape(w.shape), (codes * scale).reshape(w.shape)


def int_zero_point(w: torch.Tensor, bits: int, group) -> torch.Tensor:
    g = grouped(w, group)
    low, high = g.amin(-1, keepdim=True).clamp_max(0), g.amax(-1, keepdim=True).clamp_min(0)
    scale = (high - low) / (2**bits - 1)
    zero = torch.round(-low / scale)
    q = (torch.round(g / scale) + zero).clamp(0, 2**bits - 1)
    return ((q - zero) * scale).reshape(w.shape)


def fp8_round_trip(w: torch.Tensor, dtype: torch.dtype, group) -> torch.Tensor:
    g = grouped(w, group)
    scale = g.abs().amax(-1, keepdim=True) / torch.finfo(dtype).max
    return ((g / scale).to(dtype).float() * scale).reshape(w.shape)


def e2m1(v: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value (saturating at 6)."""
    index = (v.abs().clamp_max(6)[..., None] - E2M1_GRID).abs().argmin(-1)
    return torch.sign(v) * E2M1_GRID[index]


def mxfp4(w: torch.Tensor) -> torch.Tensor:
    g = grouped(w, 32)
    amax = g.abs().amax(-1, keepdim=True)
    x = torch.exp2(torch.floor(torch.log2(amax)) - 2)  # E2M1's largest exponent is 2
    return (e2m1(g / x) * x).reshape(w.shape)


def nvfp4(w: torch.Tensor) -> torch.Tensor:
    g = grouped(w, 16)
    tensor_scale = w.abs().max() / (6 * 448)
    block = (g.abs().amax(-1, keepdim=True) / 6 / tensor_scale).to(torch.float8_e4m3fn).float()
    step = block * tensor_scale
    return (e2m1(g / step) * step).reshape(w.shape)


def nf4_double_quant(w: torch.Tensor) -> torch.Tensor:
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(-1)
    codes = (blocks[..., None] / absmax[:, None, None] - NF4_TABLE).abs().argmin(-1)
    mean = absmax.mean()
    centred = torch.nn.functional.pad(absmax - mean, (0, -absmax.numel() % 256)).reshape(-1, 256)
    step = centred.abs().amax(-1, keepdim=True) / 127
    scales = (torch.round(centred / step) * step).reshape(-1)[: absmax.numel()] + mean
    return (NF4_TABLE[codes] * scales[:, None]).reshape(w.shape)


def reference(name: str, w: torch.Tensor) -> torch.Tensor:
    return {
        "bf16": lambda: w.to(torch.bfloat16).float(),
        "int8": lambda: int_symmetric(w, 8, "channel")[1],
        "int8-zp": lambda: int_zero_point(w, 8, "channel"),
        "int4-g32": lambda: int_zero_point(w, 4, 32),
        "int4-g128": lambda: int_zero_point(w, 4, 128),
        "fp8-e4m3": lambda: fp8_round_trip(w, torch.float8_e4m3fn, "tensor"),
        "fp8-e4m3-b128": lambda: fp8_round_trip(w, torch.float8_e4m3fn, 128),
        "fp8-e5m2": lambda: fp8_round_trip(w, torch.float8_e5m2, "tensor"),
        "mxfp4": lambda: mxfp4(w),
        "nvfp4": lambda: nvfp4(w),
        "nf4": lambda: nf4_double_quant(w),
    }[name]()


def storage_bits(name: str, rows_: int, cols: int) -> float:
    """Bits per weight: codes plus scales (fp32 = 32, zero points and E8M0/E4M3 = 8)."""
    n = rows_ * cols
    return {
        "bf16": 16, "int8": 8 + 32 / cols, "int8-zp": 8 + 40 / cols,
        "int4-g32": 4 + 40 / 32, "int4-g128": 4 + 40 / 128, "fp8-e4m3": 8 + 32 / n,
        "fp8-e4m3-b128": 8 + 32 / 128, "fp8-e5m2": 8 + 32 / n, "mxfp4": 4 + 8 / 32,
        "nvfp4": 4 + 8 / 16 + 32 / n,
        "nf4": 4 + 8 / 64 + (32 * math.ceil(n / 64 / 256) + 32) / n,
    }[name]  # fmt: skip


def test_registered_before_lora():
    names = [info.name for info in list_lessons()]
    assert names.index("quantization") == names.index("lora") - 1
    assert names.index("quantization") > names.index("paged-attention")


def decode_float(text: str, exponent_bits: int, mantissa_bits: int) -> float:
    sign, e, m = (int(field, 2) for field in text.split())
    bias = 2 ** (exponent_bits - 1) - 1
    if e == 0:
        magnitude = 2 ** (1 - bias) * m / 2**mantissa_bits
    else:
        magnitude = 2 ** (e - bias) * (1 + m / 2**mantissa_bits)
    return -magnitude if sign else magnitude


def test_bit_layouts_decode_to_the_stored_values(lesson, weight):
    tables = lesson["Number formats"][1].values
    w = weight[0, : lesson_module.SHOWN]
    absmax = float(weight.abs().max())
    for title, table in tables.items():
        fmt = title.split(" (")[0]
        divisor = {"int8": 127, "int4": 7, "FP8 E4M3": 448, "FP8 E5M2": 57344, "FP4 E2M1": 6}[fmt]
        scale = absmax / divisor
        for row, value in zip(rows(table), w.tolist(), strict=True):
            weight_shown, ratio, text, stored, restored = row
            assert weight_shown == value and ratio == pytest.approx(value / scale, rel=1e-5)
            if fmt.startswith("int"):
                width = int(fmt[3:])
                code = int(text, 2) - (2**width if text[0] == "1" else 0)  # two's complement
                assert code == stored == round(value / scale)
            elif fmt.startswith("FP8"):
                e_bits, m_bits = (4, 3) if "E4M3" in fmt else (5, 2)
                dtype = torch.float8_e4m3fn if "E4M3" in fmt else torch.float8_e5m2
                assert decode_float(text, e_bits, m_bits) == stored
                assert stored == torch.tensor(value / scale).to(dtype).float().item()
            else:
                assert decode_float(text, 2, 1) == stored == e2m1(torch.tensor(value / scale))
            assert restored == pytest.approx(stored * scale, rel=1e-6)


def test_scales(lesson, weight):
    block = weight[: lesson_module.SLICE[0], : lesson_module.SLICE[1]]
    first, second = (step.values for step in lesson["Scales and blocks"])
    assert first["int4 per-tensor scale"] == pytest.approx(float(block.abs().max() / 7))
    torch.testing.assert_close(first["int4 per-channel scales (rows)"].reshape(-1),
                               block.abs().amax(1) / 7)  # fmt: skip
    torch.testing.assert_close(first["int4 per-group-of-32 scales (rows x groups)"],
                               block.reshape(4, 2, 32).abs().amax(-1) / 7)  # fmt: skip
    amax32 = block.reshape(4, 2, 32).abs().amax(-1)
    expected_bytes = [[math.floor(math.log2(a)) - 2 + 127 for a in row] for row in amax32.tolist()]
    assert second["MXFP4 E8M0 bytes"].tolist() == expected_bytes
    tensor_scale = block.abs().max() / (6 * 448)
    assert second["NVFP4 fp32 tensor scale"] == pytest.approx(float(tensor_scale))
    amax16 = block.reshape(4, 4, 16).abs().amax(-1)
    expected_nv = (amax16 / 6 / tensor_scale).to(torch.float8_e4m3fn).float()
    torch.testing.assert_close(second["NVFP4 E4M3 block scales"], expected_nv)
    torch.testing.assert_close(second["NF4 absmax per block of 64"], block.abs().amax(1))
    overhead = [row[3] for row in rows(second["scale overhead"])]
    assert overhead == [32 / 256, 32 / 64, 32 / 32, 8 / 32, 8 / 16 + 32 / 256, 32 / 64]


def test_error_of_every_scheme(lesson, weight):
    table = rows(lesson["Error vs bits"][0].values["error"])
    names = {row[0] for row in table}
    assert names == {"bf16", "int8", "int8-zp", "int4-g32", "int4-g128", "fp8-e4m3",
                     "fp8-e4m3-b128", "fp8-e5m2", "mxfp4", "nvfp4", "nf4"}  # fmt: skip
    for name, bits, relative, largest in table:
        assert bits == round(storage_bits(name, *weight.shape), 3), name
        error = weight - reference(name, weight)
        assert relative == pytest.approx(float(100 * error.norm() / weight.norm()), rel=1e-4), name
        assert largest == pytest.approx(float(error.abs().max()), rel=1e-4), name
    assert [row[1] for row in table] == sorted((row[1] for row in table), reverse=True)


def test_outliers(lesson, weight):
    table = rows(lesson["Outliers"][1].values["relative error of the other weights (%)"])
    spiked = weight.clone()
    spiked[0, 0] = lesson_module.OUTLIER * weight.std()
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep[0, 0] = False
    for row, (_, b, group) in zip(table, lesson_module.OUTLIER_GRANULARITIES, strict=True):
        for shown, w in zip(row[1:3], (weight, spiked), strict=True):
            codes, restored = int_symmetric(w, b, group)
            expected = 100 * (w - restored)[keep].norm() / w[keep].norm()
            assert shown == pytest.approx(float(expected), rel=1e-4)
        assert row[3] == pytest.approx(float(100 * (codes[keep] == 0).float().mean()))
    by_name = {row[0]: row for row in table}
    assert by_name["int4 per tensor"][3] > 90  # nearly every weight rounds to zero
    assert by_name["int4 per group of 32"][2] < by_name["int4 per tensor"][2] / 5


def test_weight_only_and_w8a8(lesson, weight):
    table = rows(lesson["Weight-only vs W8A8"][1].values["output error (%)"])
    _, w_int8 = int_symmetric(weight, 8, "channel")
    for outlier, column in ((False, 2), (True, 3)):
        x = lesson_module.activations(outlier)
        exact = x @ weight.T
        s_x = x.abs().amax(-1, keepdim=True) / 127
        outputs = {
            "weight-only int8": x @ w_int8.T,
            "W8A8": (torch.round(x / s_x) * s_x) @ w_int8.T,
        }
        for row in table:
            expected = 100 * (outputs[row[0]] - exact).norm() / exact.norm()
            assert row[column] == pytest.approx(float(expected), rel=1e-3)
    assert table[1][3] > 2 * table[0][3]  # the activation outlier hurts W8A8 only


def test_speed_table_bytes(lesson):
    n = lesson_module.SPEED_N
    table = rows(lesson["Speed from fewer bytes"][1].values["one matmul"])
    expected = {"fp32": 4 * n * n, "bf16": 2 * n * n, "int8": n * n + 4 * n,
                "int4-g128": n * n // 2 + (n * n // 128) * (4 + 1)}  # fmt: skip
    assert [(row[0], row[1]) for row in table] == [
        ("fp32", "float32"), ("bf16", "bfloat16"), ("int8", "bfloat16"),
        ("int4-g128", "bfloat16"), ("int8", "float32"), ("int4-g128", "float32"),
    ]  # fmt: skip
    for name, _, nbytes, ms, speedup, error in table:
        assert nbytes == expected[name] and ms > 0
        assert speedup == round(table[0][3] / ms, 2)
        assert error < (0.1 if name == "int4-g128" else 0.01)


def test_straight_through_gradient(lesson):
    values = lesson["Quantisation-aware training"][1].values
    w, x = values["w"], values["x"]
    _, q = int_symmetric(w, 4, "tensor")
    torch.testing.assert_close(values["Q(w) (int4 per tensor)"], q)
    torch.testing.assert_close(values["forward uses"], q)
    torch.testing.assert_close(values["dL/dw"], 2 * (q @ x) * x[None, :])


def test_qat_curve_by_an_independent_loop(lesson):
    table = rows(lesson["Quantisation-aware training"][2].values["held-out MSE vs the fp32 layer"])
    weight, train, held = lesson_module.qat_data()
    master = weight.clone().requires_grad_()
    curve = []
    for step in range(lesson_module.QAT_STEPS + 1):
        fake = master + (mxfp4(master.detach()) - master).detach()
        if step % lesson_module.QAT_EVERY == 0:
            with torch.no_grad():
                curve.append(float(((held @ fake.T - held @ weight.T) ** 2).mean()))
        if step < lesson_module.QAT_STEPS:
            loss = ((train @ fake.T - train @ weight.T) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                master -= lesson_module.QAT_LR * master.grad
                master.grad = None
    assert [row[0] for row in table] == list(range(0, lesson_module.QAT_STEPS + 1, 10))
    assert [row[1] for row in table] == pytest.approx(curve, rel=1e-3)
    assert table[-1][2] == round(curve[-1] / curve[0], 3) < 0.7  # QAT recovers a good part
