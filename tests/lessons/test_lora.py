"""The lora lesson's numbers, recomputed independently: the 7B memory and adapter counts from the
published config.json fields and the closed forms, the 4x4 training step on PEFT's own
lora.Linear (live reference), the merge by hand (W0 + s B A in a fresh copy of the model), and
the QLoRA bytes from the layer shapes (NF4: half a byte per weight plus the double-quantised
scales)."""

from __future__ import annotations

import math

import peft
import pytest
import torch
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn

from llm_internals.adapters import lora_layers
from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import lora as lesson_module
from llm_internals.explain.registry import list_lessons
from llm_internals.explain.tiny_models import tiny_decoder

GIB = 2**30
# Llama-2-7b-hf config.json
V, D, LAYERS, FF, HEADS, KV_HEADS = 32000, 4096, 32, 11008, 32, 32
HEAD_DIM = D // HEADS
R = 8
# (d_in + d_out) of each target of one Llama-2-7B block
SUMS = {"q": 2 * D, "k": D + KV_HEADS * HEAD_DIM, "v": D + KV_HEADS * HEAD_DIM, "o": 2 * D,
        "gate": D + FF, "up": D + FF, "down": FF + D}  # fmt: skip
SETS = {"q,v": "qv", "q,k,v,o": "qkvo", "all-linear": ["q", "k", "v", "o", "gate", "up", "down"]}


def llama2_params() -> int:
    """Embedding + untied head, per layer 4 attention matrices, 3 MLP matrices and 2 RMSNorms,
    plus the final norm."""
    return 2 * V * D + LAYERS * (4 * D * D + 3 * D * FF + 2 * D) + D


@pytest.fixture(scope="module")
def lesson():
    return {s.title: s.steps for s in lesson_module.build().sections}


def rows(table) -> list[list]:
    assert isinstance(table, Table)
    return table.rows


def test_registered_after_quantization():
    names = [info.name for info in list_lessons()]
    assert names[-1] == "lora" and list_lessons()[-1] == lesson_module.INFO
    if "quantization" in names:
        assert names.index("quantization") == len(names) - 2


def test_big_picture_and_full_fine_tuning_bytes(lesson):
    total = llama2_params()
    values = lesson["Big picture"][1].values
    assert values["parameters of the model"] == total == 6_738_415_616
    qv = LAYERS * R * (SUMS["q"] + SUMS["v"])
    assert values["trainable LoRA parameters"] == qv
    assert values["trainable share (%)"] == round(100 * qv / total, 4)
    table = rows(lesson["Why full fine-tuning is expensive"][0].values["GiB for full fine-tuning"])
    for row, (weight, grad) in zip(table, [(4, 4), (2, 2)], strict=True):
        # weights, gradients, then Adam's m and v in fp32 (4 bytes each, both counted)
        expected = [total * weight, total * grad, total * 4, total * 4]
        assert row[1:5] == [round(b / GIB, 1) for b in expected]
        assert row[5] == round(sum(expected) / GIB, 1)
        assert row[6] == weight + grad + 8


def test_core_idea_counts(lesson):
    values = lesson["The core idea: delta W = B A"][1].values
    assert values[f"full matrix ({D} x {D})"] == D * D
    for r, params, share in rows(values["LoRA"]):
        assert params == r * (D + D)  # A: r x d_in, B: d_out x r
        assert share == round(100 * params / (D * D), 3)


def test_step_by_step(lesson):
    steps = lesson["Step by step"]
    a, b = steps[0].values["A"], steps[0].values["B"]
    d_in = a.shape[1]
    assert a.shape == (lesson_module.STEP_R, d_in) and b.shape == (d_in, lesson_module.STEP_R)
    assert 0 < a.abs().max() <= 1 / math.sqrt(d_in) and torch.count_nonzero(b) == 0
    assert steps[1].values["max |LoRA output - base output|"] == 0.0
    scale = steps[2].values
    assert scale["s"] == lesson_module.STEP_ALPHA / lesson_module.STEP_R
    assert scale["s (rsLoRA)"] == pytest.approx(
        lesson_module.STEP_ALPHA / math.sqrt(lesson_module.STEP_R)
    )
    x = torch.randn(3, d_in, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(steps[3].values["x A^T (3 x r)"], x @ a.T)
    assert torch.count_nonzero(steps[3].values["h - x W0^T (zero while B = 0)"]) == 0


def test_numeric_example_is_peft_s_training_step(lesson):
    steps = lesson["A small numeric example"]
    shown = {**steps[0].values, **steps[1].values, **steps[2].values}
    weight, x, y = shown["W0"], shown["x"], shown["y"]
    assert torch.linalg.matrix_rank(y - x @ weight.T) == 1  # a rank-1 update can fit y
    alpha, lr = lesson_module.EXAMPLE_ALPHA, lesson_module.EXAMPLE_LR
    base = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        base.weight.copy_(weight)
    config = dict(r=1, lora_alpha=alpha)
    ref = PeftLinear(base, "default", peft.LoraConfig(**config), **config)
    a, b = ref.lora_A["default"].weight, ref.lora_B["default"].weight
    with torch.no_grad():
        a.copy_(shown["A"])
        b.zero_()
    loss = ((ref(x) - y) ** 2).mean()
    loss.backward()
    assert shown["loss"] == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(shown["dL/dA"], torch.zeros(1, 4), rtol=0, atol=0)
    torch.testing.assert_close(shown["dL/dB"], b.grad)
    with torch.no_grad():
        a -= lr * a.grad
        b -= lr * b.grad
    a.grad = b.grad = None
    torch.testing.assert_close(shown["B after the step"], b.detach())
    torch.testing.assert_close(shown["delta W = s B A"], ref.get_delta_weight("default"))
    torch.testing.assert_close(shown["delta W = s B A"], alpha * b.detach() @ a.detach())
    torch.testing.assert_close(shown["W0 + delta W"], weight + alpha * b.detach() @ a.detach())
    after = ((ref(x) - y) ** 2).mean()
    after.backward()
    assert shown["loss after"] == pytest.approx(after.item(), rel=1e-6)
    assert after.item() < loss.item()
    torch.testing.assert_close(shown["dL/dA at step 2"], a.grad)


def lesson_model_sums() -> dict[str, int]:
    d, f = lesson_module.LESSON_SHAPE["d_model"], lesson_module.LESSON_SHAPE["d_ff"]
    return {"q": 2 * d, "k": 2 * d, "v": 2 * d, "o": 2 * d, "gate": d + f, "up": d + f,
            "down": f + d}  # fmt: skip


def test_where_lora_goes(lesson):
    table = rows(lesson["Where LoRA is applied in a transformer"][1].values["trainable parameters"])
    ours_total = sum(p.numel() for p in lesson_module.lesson_model().parameters())
    n_layers = lesson_module.LESSON_SHAPE["n_layers"]
    ours_sums = lesson_model_sums()
    assert [row[0] for row in table] == list(SETS)
    for targets, big, big_share, ours, ours_share in table:
        big_expected = LAYERS * R * sum(SUMS[t] for t in SETS[targets])
        assert big == big_expected
        assert big_share == round(100 * big_expected / llama2_params(), 3)
        ours_expected = n_layers * R * sum(ours_sums[t] for t in SETS[targets])
        assert ours == ours_expected
        assert ours_share == round(100 * ours_expected / ours_total, 3)


def test_merge_equals_the_adapter_forward(lesson):
    values = lesson["Merging back"][1].values
    model, ids = lesson_module.trained_tiny()
    layers = lora_layers(model)
    q = layers["blocks.0.attn.q_proj"]
    s = q.settings["default"].alpha / q.settings["default"].r
    b, a = q.lora_B["default"].weight.detach(), q.lora_A["default"].weight.detach()
    torch.testing.assert_close(values["W0 (layer 0 W_q)"], q.base.weight.detach())
    torch.testing.assert_close(values["merged W"], q.base.weight.detach() + s * b @ a)
    # a fresh copy of the same base with every W replaced by W0 + s B A, by hand
    plain = tiny_decoder(0)
    with torch.no_grad():
        for path, layer in layers.items():
            delta = s * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            plain.get_submodule(path).weight.copy_(layer.base.weight + delta)
        torch.testing.assert_close(plain(ids), model(ids), rtol=0, atol=1e-6)
    for key in ("max |logits merged - unmerged|", "max |logits after unmerge - unmerged|",
                "max |W after unmerge - W0|"):  # fmt: skip
        assert 0 <= values[key] < 1e-6
    assert values["merged W"].sub(values["W0 (layer 0 W_q)"]).abs().max() > 1e-2  # trained


def test_qlora_bytes_from_shapes(lesson):
    values = lesson["Real-world use: QLoRA"][1].values
    (full_name, *full), (lora_name, *lora), (q_name, *qlora) = rows(values["training memory"])
    model = lesson_module.lesson_model()
    total = sum(p.numel() for p in model.parameters())
    linear = [m.weight.numel() for n, m in model.named_modules()
              if n.startswith("blocks.") and isinstance(m, nn.Linear)]  # fmt: skip
    n_layers = lesson_module.LESSON_SHAPE["n_layers"]
    adapters = n_layers * R * sum(lesson_model_sums().values())
    # trainable, weights, gradients, Adam m+v, total
    assert full == [total, 4 * total, 4 * total, 8 * total, 16 * total]
    lora_weights = 4 * total + 4 * adapters
    assert lora == [adapters, lora_weights, 4 * adapters, 8 * adapters,
                    lora_weights + 12 * adapters]  # fmt: skip

    def nf4_bytes(n: int) -> int:
        blocks = n // 64  # packed codes, int8 absmax per block, fp32 scale per 256 blocks, mean
        return n // 2 + blocks + 4 * math.ceil(blocks / 256) + 4

    q_weights = 4 * (total - sum(linear)) + sum(nf4_bytes(n) for n in linear) + 4 * adapters
    assert qlora == [adapters, q_weights, 4 * adapters, 8 * adapters, q_weights + 12 * adapters]
    assert values["full / QLoRA"] == round(full[-1] / qlora[-1], 2)


def test_qlora_bytes_of_the_7b(lesson):
    table = rows(lesson["Real-world use: QLoRA"][2].values["training memory"])
    total = llama2_params()
    matrices = [D * D] * 4 + [D * FF] * 3  # q, k, v, o (32 KV heads); gate, up, down
    linear = LAYERS * sum(matrices)
    adapters = LAYERS * 64 * sum(SUMS.values())

    def nf4(n: int) -> int:
        return n // 2 + n // 64 + 4 * math.ceil(n / 64 / 256) + 4

    base = LAYERS * sum(nf4(n) for n in matrices) + 2 * (total - linear)
    expected = [
        [total, 2 * total, 2 * total, 8 * total],
        [adapters, 2 * total + 4 * adapters, 4 * adapters, 8 * adapters],
        [adapters, base + 4 * adapters, 4 * adapters, 8 * adapters],
    ]
    for row, (trainable, *parts) in zip(table, expected, strict=True):
        assert row[1] == trainable
        assert row[2:] == [round(b / GIB, 2) for b in (*parts, sum(parts))]
    assert table[2][-1] < 8 < table[1][-1] < 24 < table[0][-1]
