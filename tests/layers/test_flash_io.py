"""The IO model (layers/flash_io.py) against what the code actually touches: standard
attention's bytes counted function by function under a TorchFunctionMode while our real
`scaled_dot_product_attention` runs, the causal block skipping against `causal_mask`, the tiled
counts against the FlashCounters of the real tiled function for both loop orders, the paper's
block sizes and Theta(N^2 d^2 / M) by arithmetic, and the CPU cache reader against a fake sysfs
tree and `getconf`."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from llm_internals.errors import LLMInternalsError
from llm_internals.layers.attention import scaled_dot_product_attention
from llm_internals.layers.cpu_caches import SYSFS_CACHE_DIR, parse_size, read_cpu_caches
from llm_internals.layers.flash_attention import FlashCounters, flash_attention
from llm_internals.layers.flash_io import (
    GPUS,
    PAPER_STANDARD,
    Tiling,
    block_pairs,
    paper_block_sizes,
    standard_io,
    tiled_backward_io,
    tiled_io,
)
from llm_internals.layers.masks import causal_mask


class ByteLog(TorchFunctionMode):
    """Bytes of every tensor each torch function reads (its tensor inputs) and writes (its
    outputs), grouped by the tensor's number of elements. Attribute reads (no tensor out) and
    views (an output sharing an input's storage, except in-place functions, whose names end in
    "_") move nothing and are left out."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[int, int] = {}
        self.writes: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        storages = {t.untyped_storage().data_ptr() for t in ins}
        view = any(t.untyped_storage().data_ptr() in storages for t in outs)
        if outs and (not view or getattr(func, "__name__", "").endswith("_")):
            for table, tensors in ((self.reads, ins), (self.writes, outs)):
                for t in tensors:
                    table[t.numel()] = table.get(t.numel(), 0) + t.numel() * t.element_size()
        return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standard_io_counts_every_pass_of_our_materialised_attention(masked, dtype):
    n_q, n_k, d = 24, 40, 8  # N_q N_k, N_q d, N_k d all distinct element counts
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n_q, d, generator=g, dtype=dtype)
    k, v = (torch.randn(n_k, d, generator=g, dtype=dtype) for _ in range(2))
    mask = causal_mask(n_q, n_k) if masked else None
    with ByteLog() as log:
        scaled_dot_product_attention(q, k, v, mask=mask)
    model = standard_io(n_q, n_k, d, dtype.itemsize, masked=masked)
    square = n_q * n_k
    assert log.reads[square] == model.reads["S"] + model.reads.get("mask", 0)
    assert log.writes[square] == model.writes["S"] + model.writes.get("mask", 0)
    assert log.reads[n_q * d] == model.reads["Q"]
    assert log.reads[n_k * d] == model.reads["K"] + model.reads["V"]
    assert log.writes[n_q * d] == model.writes["O"]
    assert n_k * d not in log.writes


def test_standard_io_pass_counts_and_scaling():
    n, d, b = 1000, 64, 4
    ours, paper = standard_io(n, n, d, b), standard_io(n, n, d, b, passes=PAPER_STANDARD)
    assert paper.reads == {"Q": n * d * b, "K": n * d * b, "S": 2 * n * n * b, "V": n * d * b}
    assert paper.writes == {"S": 2 * n * n * b, "O": n * d * b}
    assert ours.reads["S"] == 7 * n * n * b and ours.writes["S"] == 5 * n * n * b
    masked = standard_io(n, n, d, b, masked=True)
    assert masked.reads["S"] == 8 * n * n * b and masked.writes["S"] == 6 * n * n * b
    assert masked.reads["mask"] == 2 * n * n and masked.writes["mask"] == n * n
    # Theta(N d + N^2): doubling N quadruples the bytes once N >> d
    big, bigger = standard_io(2**14, 2**14, d, b), standard_io(2**15, 2**15, d, b)
    assert 3.9 < bigger.total_bytes / big.total_bytes < 4.0


@pytest.mark.parametrize(
    "n_q, n_k, bq, bk", [(37, 37, 8, 5), (16, 16, 4, 4), (5, 29, 4, 8), (1, 33, 16, 16)]
)
def test_causal_skips_exactly_the_blocks_the_causal_mask_leaves_empty(n_q, n_k, bq, bk):
    mask = causal_mask(n_q, n_k)
    pairs = block_pairs(n_q, n_k, bq, bk, causal=True)
    assert len(pairs) == math.ceil(n_q / bq) * math.ceil(n_k / bk)
    for i, j, computed in pairs:
        assert computed == bool(mask[i * bq : (i + 1) * bq, j * bk : (j + 1) * bk].any())
    assert all(c for *_, c in block_pairs(n_q, n_k, bq, bk, causal=False))


def test_tiled_io_by_hand_on_a_small_causal_case():
    # N = 4 positions in 2 blocks of 2 (each way), d = 3, fp32, causal: pairs (0,0), (1,0),
    # (1,1) computed, (0,1) skipped; 3 pairs x 2 rows = 6 row visits.
    row, stat = 3 * 4, 4
    tiling = Tiling(4, 4, 3, 4, block_q=2, block_k=2, causal=True)
    fa2 = tiled_io(tiling, "fa2")
    assert (fa2.computed_pairs, fa2.skipped_pairs) == (3, 1)
    assert fa2.reads == {"K": 6 * row, "V": 6 * row, "Q": 4 * row}
    assert fa2.writes == {"O": 4 * row, "L": 4 * stat}
    fa1 = tiled_io(tiling, "fa1")
    assert fa1.reads == {"K": 4 * row, "V": 4 * row, "Q": 6 * row, "O": 6 * row,
                         "m": 10 * stat, "l": 10 * stat}  # fmt: skip
    assert fa1.writes == {"O": 10 * row, "m": 10 * stat, "l": 10 * stat, "L": 4 * stat}
    back = tiled_backward_io(tiling)
    assert back.reads == {"O": 4 * row, "dO": 10 * row, "K": 4 * row, "V": 4 * row,
                          "Q": 6 * row, "L": 6 * stat, "D": 6 * stat, "dQ": 6 * row}  # fmt: skip
    assert back.writes == {"D": 4 * stat, "dQ": 10 * row, "dK": 4 * row, "dV": 4 * row}
    # grouped-query attention: 8 query heads sharing 2 K/V heads move 4x less K and V
    gqa = tiled_io(Tiling(4, 4, 3, 4, block_q=2, block_k=2, causal=True, heads=8, kv_heads=2))
    assert gqa.reads == {"K": 12 * row, "V": 12 * row, "Q": 32 * row}


def test_paper_block_sizes_and_theta_n2d2_over_m():
    # M = 192 KiB of fp16 = 98,304 elements, d = 64: B_c = ceil(98304 / 256) = 384, B_r = 64
    assert paper_block_sizes(192 * 1024, 64, 2) == (64, 384)
    assert paper_block_sizes(1000, 64, 4) == (1, 1)  # 250 elements: ceil(250 / 256) = 1
    assert paper_block_sizes(4096, 8, 4) == (8, 32)  # 1024 / 32 = 32, min(32, d = 8)
    n, d, sram = 16384, 64, 192 * 1024
    m = sram // 2

    def fa1_bytes(sram_bytes):
        br, bc = paper_block_sizes(sram_bytes, d, 2)
        return tiled_io(Tiling(n, n, d, 2, br, bc, stat_bytes=2), "fa1").total_bytes

    # Q read, O read, O written ceil(N / B_c) times, m and l read and written as often; K, V
    # read once; O, m, l initialised; m, l read and L written at the end.
    t_c = math.ceil(n / paper_block_sizes(sram, d, 2)[1])
    assert fa1_bytes(sram) == 2 * (3 * t_c * n * d + 3 * n * d + 4 * t_c * n + 5 * n)
    assert 11 < fa1_bytes(sram) / 2 / (n * n * d * d / m) < 13.5
    # doubling M halves the tiled traffic's leading term; the standard count does not depend on M
    assert 1.8 < fa1_bytes(sram) / fa1_bytes(2 * sram) < 2.0


def test_published_gpu_figures_name_their_source():
    for gpu in GPUS:
        assert gpu.source and gpu.sms > 0 and gpu.hbm_bytes_per_s > 1e12
        assert 100 * 1024 <= gpu.sram_bytes_per_sm <= 256 * 1024


def test_bad_sizes_are_one_clear_error():
    with pytest.raises(LLMInternalsError, match="block_q"):
        Tiling(8, 8, 4, 4, block_q=0, block_k=4)
    with pytest.raises(LLMInternalsError, match="loop order"):
        tiled_io(Tiling(8, 8, 4, 4, block_q=4, block_k=4), "fa3")


def _fake_cache(root, index, level, kind, size):
    folder = root / f"index{index}"
    folder.mkdir(parents=True)
    for name, text in (("level", f"{level}\n"), ("type", f"{kind}\n"), ("size", f"{size}\n")):
        (folder / name).write_text(text)


def test_cpu_caches_from_a_sysfs_tree(tmp_path):
    for args in ((0, 1, "Data", "48K"), (1, 1, "Instruction", "32K"), (2, 2, "Unified", "2048K"),
                 (3, 3, "Unified", "300M")):  # fmt: skip
        _fake_cache(tmp_path, *args)
    caches = read_cpu_caches(tmp_path)
    assert [(c.label, c.size_bytes) for c in caches.caches] == [
        ("L1d", 48 * 1024), ("L2", 2 * 1024**2), ("L3", 300 * 1024**2)
    ]  # fmt: skip
    assert caches.size(2) == 2 * 1024**2 and caches.size(4) is None
    assert parse_size("512") == 512
    with pytest.raises(ValueError, match="12Q"):
        parse_size("12Q")


def test_cpu_caches_fall_back_to_empty_with_a_reason(tmp_path):
    assert read_cpu_caches(tmp_path / "missing").caches == ()
    _fake_cache(tmp_path, 0, 1, "Data", "lots")
    broken = read_cpu_caches(tmp_path)
    assert broken.caches == () and "lots" in broken.source


def test_cpu_caches_agree_with_getconf_on_this_machine():
    caches = read_cpu_caches()
    getconf = shutil.which("getconf")
    if not SYSFS_CACHE_DIR.is_dir() or getconf is None:
        assert caches.caches == () or getconf is None
        return
    for level, key in ((1, "LEVEL1_DCACHE_SIZE"), (2, "LEVEL2_CACHE_SIZE"),
                       (3, "LEVEL3_CACHE_SIZE")):  # fmt: skip
        text = subprocess.run([getconf, key], capture_output=True, text=True).stdout.strip()
        if text.isdigit() and int(text) > 0:
            assert caches.size(level) == int(text), key


@pytest.mark.parametrize("loop_order", ["fa2", "fa1"])
@pytest.mark.parametrize(
    "n_q, n_k, heads, kv_heads, bq, bk, causal, dtype",
    [
        (37, 37, 2, 2, 8, 5, True, torch.float32),  # ragged blocks, B_r != B_c
        (16, 16, 4, 4, 4, 4, False, torch.float64),
        (5, 29, 4, 2, 4, 8, True, torch.float32),  # queries at an offset, GQA
        (1, 33, 4, 1, 16, 16, True, torch.bfloat16),  # one decode query, MQA, 2-byte elements
        (24, 24, 2, 2, 32, 32, True, torch.float32),  # one block larger than N
    ],
)
def test_io_model_equals_the_counters_of_the_real_loops(
    loop_order, n_q, n_k, heads, kv_heads, bq, bk, causal, dtype
):
    g = torch.Generator().manual_seed(0)
    d, batch = 8, 2
    q = torch.randn(batch, heads, n_q, d, generator=g).to(dtype).requires_grad_()
    k, v = (torch.randn(batch, kv_heads, n_k, d, generator=g).to(dtype).requires_grad_()
            for _ in range(2))  # fmt: skip
    counters = FlashCounters()
    out = flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk, loop_order=loop_order,
                          counters=counters)  # fmt: skip
    out.float().sum().backward()
    tiling = Tiling(n_q, n_k, d, dtype.itemsize, bq, bk, causal, batch * heads, batch * kv_heads,
                    stat_bytes=8 if dtype == torch.float64 else 4)  # fmt: skip
    forward, backward = tiled_io(tiling, loop_order), tiled_backward_io(tiling)
    assert dict(counters.forward.read) == forward.reads
    assert dict(counters.forward.written) == forward.writes
    assert (counters.blocks_computed, counters.blocks_skipped) == (
        forward.computed_pairs, forward.skipped_pairs
    )  # fmt: skip
    assert dict(counters.backward.read) == backward.reads
    assert dict(counters.backward.written) == backward.writes
