"""Lesson figures (explain/figures.py): valid PNGs of sensible size in the figures folder, named by
a hash of their data, byte-identical for the same data, and what each lesson's figure plots
(read back from the matplotlib artists) equals an independent computation of the same numbers."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from llm_internals.explain import figures
from llm_internals.explain.figures import (
    FIGURES_ENV,
    bar_figure,
    heatmap_figure,
    line_figure,
    path_figure,
    plotted,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def figures_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "figures"))
    return tmp_path / "figures"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def check_png(figure, folder) -> None:
    assert figure.path.parent == folder and figure.path.suffix == ".png"
    width, height = png_size(figure.path)
    assert 300 <= width <= 2000 and 200 <= height <= 1500, (width, height)
    assert 5_000 < figure.path.stat().st_size < 1_000_000
    assert figure.caption


def test_same_data_same_file_and_bytes_other_data_other_file(figures_in_tmp, tmp_path, monkeypatch):
    args = ("t", "curve", "caption", [1, 2, 3], {"a": [0.5, 0.25, 0.125]}, "x", "y")
    first = line_figure(*args)
    check_png(first, figures_in_tmp)
    assert first.path.name.startswith("t-curve-")
    again = line_figure(*args)
    assert again.path == first.path
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path / "elsewhere"))
    redrawn = line_figure(*args)  # drawn afresh in another folder: the same bytes
    assert redrawn.path.read_bytes() == first.path.read_bytes()
    other = line_figure("t", "curve", "caption", [1, 2, 3], {"a": [0.5, 0.25, 0.126]}, "x", "y")
    assert other.path.name != first.path.name
    assert not list(figures_in_tmp.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_every_kind_plots_exactly_its_data(figures_in_tmp):
    matrix = np.arange(12, dtype=float).reshape(3, 4) / 11
    heat = heatmap_figure(
        "t", "heat", "c", {"m": matrix, "m2": 1 - matrix}, list("abc"), list("wxyz")
    )
    check_png(heat, figures_in_tmp)
    assert np.array_equal(plotted(heat.path)["m"], matrix)
    assert np.array_equal(plotted(heat.path)["m2"], 1 - matrix)
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    trail = path_figure("t", "path", "c", {"p": points}, "x", "y")
    check_png(trail, figures_in_tmp)
    assert np.array_equal(plotted(trail.path)["p"], points)
    bars = bar_figure("t", "bars", "c", ["one", "two"], {"s": [3.0, 4.0], "u": [1.0, 2.0]}, "y")
    check_png(bars, figures_in_tmp)
    assert plotted(bars.path)["s"].tolist() == [3.0, 4.0]
    assert plotted(bars.path)["u"].tolist() == [1.0, 2.0]


def test_default_folder_is_under_llm_internals_home(monkeypatch, tmp_path):
    monkeypatch.delenv(FIGURES_ENV)
    monkeypatch.setenv("LLM_INTERNALS_HOME", str(tmp_path / "home"))
    assert figures.figures_dir() == tmp_path / "home" / "figures"


def test_scaling_saturation_curve_is_softmax_of_scaled_scores(figures_in_tmp):
    from llm_internals.explain.lessons import scaling

    figure = scaling.saturation_figure()
    check_png(figure, figures_in_tmp)
    drawn = plotted(figure.path)
    assert drawn["x:unscaled"].tolist() == list(scaling.FIGURE_HEAD_SIZES)
    for label, scale in (("unscaled", lambda d: 1.0), ("1/sqrt(d_k)", lambda d: d**-0.5),
                         ("1/d_k", lambda d: 1.0 / d)):  # fmt: skip
        expected = []
        for d in scaling.FIGURE_HEAD_SIZES:
            q, k, _ = scaling.samples(d)
            weights = torch.softmax((q @ k.transpose(-1, -2)).double() * scale(d), dim=-1)
            expected.append(float(weights.amax(-1).mean()))
        np.testing.assert_allclose(drawn[label], expected, rtol=1e-5)
    unscaled = drawn["unscaled"]
    assert unscaled[-1] > 0.9 and np.all(np.diff(unscaled) > 0)  # saturates as d_k grows


def test_rope_figure_is_the_rotation_of_each_pair(figures_in_tmp):
    from llm_internals.explain.lessons import rope

    figure = rope.rotation_figure()
    check_png(figure, figures_in_tmp)
    drawn = plotted(figure.path)
    q = rope.QUERY
    for label, (a, b), w in (("pair 0 (q0, q2), w = 1", (q[0], q[2]), 1.0),
                             ("pair 1 (q1, q3), w = 0.1", (q[1], q[3]), 0.1)):  # fmt: skip
        angles = np.arange(rope.FIGURE_POSITIONS) * w
        expected = np.stack([a * np.cos(angles) - b * np.sin(angles),
                             a * np.sin(angles) + b * np.cos(angles)], axis=1)  # fmt: skip
        np.testing.assert_allclose(drawn[label], expected, atol=1e-5)


def test_causal_mask_figure_panels(figures_in_tmp):
    from llm_internals.explain.lessons import causal_mask

    attention, x, _ = causal_mask.inputs()
    figure = causal_mask.mask_figure(attention, x)
    check_png(figure, figures_in_tmp)
    drawn = plotted(figure.path)
    n = len(causal_mask.WORDS)
    assert np.array_equal(drawn["causal_mask(4) (1 = may attend)"], np.tril(np.ones((n, n))))
    with torch.no_grad():
        q, k = attention.q_proj(x)[0], attention.k_proj(x)[0]
        scores = q @ k.T / math.sqrt(causal_mask.D_MODEL)
        future = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    np.testing.assert_allclose(drawn["weights, no mask"], torch.softmax(scores, -1), atol=1e-6)
    causal = torch.softmax(scores.masked_fill(future, -math.inf), -1)
    np.testing.assert_allclose(drawn["weights, causal"], causal, atol=1e-6)


def test_kv_memory_figure_follows_the_published_configs(figures_in_tmp):
    from llm_internals.explain import kv_cache_memory as kv_cache
    from llm_internals.models.published import hf_config

    figure = kv_cache.memory_figure()
    check_png(figure, figures_in_tmp)
    drawn = plotted(figure.path)
    element_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}
    for name in kv_cache.MEMORY_MODELS:
        config = hf_config(name)
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        heads = config.get("num_attention_heads", config.get("n_head"))
        kv_heads = config.get("num_key_value_heads", heads)
        head_dim = config.get("hidden_size", config.get("n_embd")) // heads
        size = element_bytes[config.get("torch_dtype", "float32")]
        expected = [2 * layers * kv_heads * head_dim * t * size / 2**30
                    for t in kv_cache.FIGURE_CONTEXTS]  # fmt: skip
        np.testing.assert_allclose(drawn[name], expected, rtol=1e-12)
        assert drawn[f"x:{name}"].tolist() == list(kv_cache.FIGURE_CONTEXTS)


def test_paged_waste_figure_plots_the_two_series(figures_in_tmp):
    from llm_internals.explain.lessons import paged_attention

    paged, contiguous = [0.02, 0.03, 0.01], [0.41, 0.40, 0.39]
    figure = paged_attention.waste_figure(paged, contiguous, 16)
    check_png(figure, figures_in_tmp)
    drawn = plotted(figure.path)
    assert drawn["paged, block_size 16"].tolist() == paged
    assert drawn["contiguous reservations"].tolist() == contiguous
    assert drawn["x:contiguous reservations"].tolist() == [1, 2, 3]


def test_paged_lesson_contiguous_series_counts_unfinished_requests(figures_in_tmp):
    """The contiguous series of the waste figure, recounted from the engine's outputs alone:
    slots holding K/V = prompt + generated - 1 per unfinished request (the newest token has no
    K/V yet), reserved = prompt + MAX_TOKENS_CAP per unfinished request."""
    import random

    from llm_internals.explain import paged_workload
    from llm_internals.explain.lessons import paged_attention as lesson
    from llm_internals.inference.paged import LLM
    from llm_internals.inference.params import SamplingParams

    tok = lesson.tiny_tokenizer()
    _, paged, lengths, contiguous = lesson.measured_run(tok, 64)
    model = lesson.tiny_model(tok.vocab_size, max_seq_len=lesson.CONTEXT)
    llm = LLM(model, None, block_size=64, num_blocks=sum(-(-(p + o) // 64) for p, o in lengths),
              max_num_seqs=lesson.WORKLOAD_SIZE, max_num_batched_tokens=4096)  # fmt: skip
    rng = random.Random(paged_workload.WORKLOAD_SEED + 1)
    for i, (p, o) in enumerate(lengths):
        prompt = [rng.randrange(tok.vocab_size) for _ in range(p)]
        llm.add_request(str(i), prompt, SamplingParams(temperature=0.0, max_tokens=o,
                                                       ignore_eos=True))  # fmt: skip
    generated, finished, expected = dict.fromkeys(range(len(lengths)), 0), set(), []
    while llm.has_unfinished():
        for output in llm.step():
            generated[int(output.request_id)] += len(output.new_token_ids)
            if output.request_finished:
                finished.add(int(output.request_id))
        live = [i for i in generated if i not in finished]
        if live:
            held = sum(lengths[i][0] + generated[i] - 1 for i in live)
            expected.append(1 - held / sum(lengths[i][0] + lesson.MAX_TOKENS_CAP for i in live))
    assert contiguous == pytest.approx(expected, abs=1e-12)
    assert len(paged) == len(contiguous) and sum(paged) < sum(contiguous) / 3
