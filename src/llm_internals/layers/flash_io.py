"""How many bytes attention moves to and from slow memory: standard against tiled (FlashAttention).

The FlashAttention paper's IO model (Dao et al. 2022, section 3.2, Theorem 2): memory is slow and
large (HBM on a GPU, DRAM on a CPU) or fast and small (SRAM of size M: shared memory per SM, a
CPU cache). Each kernel reads its inputs from slow memory once and writes its output once; what
happens on chip is free. Per (batch, head), for N queries and keys of head dimension d:

    standard (the N x N scores written out):  Theta(N d + N^2)    every pass over S moves N^2
    tiled (S only ever in blocks on chip):    Theta(N^2 d^2 / M)   Q, K, V, O re-read per block

Standard attention is counted pass by pass (`Pass`), for two implementations: the paper's
Algorithm 0 (3 kernels: S = QK^T, P = softmax(S), O = PV) and this project's written-out
`layers.attention.scaled_dot_product_attention`, whose in-place scale, mask and softmax steps
are each one more pass over the N^2 scores. Row statistics (row max, row sum: N values per pass)
are left out of both; they are O(N), below the N d and N^2 terms.

Tiled attention is counted block pair by block pair for the loop order that runs (`tiled_io`):

    fa2 (outer loop over query blocks i):  read Q_i once; for each block pair (i, j) that is not
        skipped, read K_j and V_j; write O_i and L_i once.
    fa1 (outer loop over key/value blocks j, the paper's Algorithm 1):  read K_j and V_j once;
        for each block pair not skipped, read Q_i, O_i, m_i, l_i and write O_i, m_i, l_i.

In causal mode a block pair whose every key lies after every query of the block is skipped
(never loaded). With the paper's block sizes for an SRAM of M elements, B_c = ceil(M / 4d) and
B_r = min(B_c, d), the fa1 count is ~ 12 N^2 d^2 / M elements (Q read, O read, O written
ceil(N / B_c) ~ 4 N d / M times each): Theta(N^2 d^2 / M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llm_internals.errors import LLMInternalsError

LOOP_ORDERS = ("fa2", "fa1")


@dataclass(frozen=True)
class Accelerator:
    """Published figures of a GPU (not measured here): slow memory bandwidth, on-chip SRAM per
    streaming multiprocessor (SM), SM count, dense 16-bit tensor-core peak, and where they come
    from."""

    name: str
    hbm_bytes: int
    hbm_bytes_per_s: float
    sram_bytes_per_sm: int
    sms: int
    peak_flops_16bit: float
    source: str


GPUS = (
    Accelerator(
        "A100 SXM4 80GB", 80 * 10**9, 2.039e12, 192 * 1024, 108, 312e12,
        "FlashAttention paper (Dao et al. 2022) section 2.1: 40-80 GB HBM at 1.5-2.0 TB/s, "
        "192 KB of SRAM per each of 108 SMs; NVIDIA A100 datasheet: 2,039 GB/s (80GB SXM), "
        "312 TFLOPS FP16/BF16 tensor core (dense)",
    ),
    Accelerator(
        "H100 SXM5 80GB", 80 * 10**9, 3.35e12, 228 * 1024, 132, 989e12,
        "NVIDIA H100 datasheet: 3.35 TB/s HBM3, 1,979 TFLOPS BF16 with sparsity (989 dense); "
        "H100 architecture whitepaper: 132 SMs (SXM5); Hopper tuning guide: up to 228 KB of "
        "shared memory per SM",
    ),
)  # fmt: skip
"""Published GPU figures the lesson and the docs evaluate the IO model for."""


@dataclass(frozen=True)
class Pass:
    """One kernel of standard attention: the tensors it reads from and writes to slow memory.
    Tensor names: Q, K, V (N x d), S (the N_q x N_k scores or probabilities), mask (N_q x N_k
    booleans, one byte each), O (N_q x d)."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    only_when_masked: bool = False


PAPER_STANDARD = (
    Pass("S = Q K^T", ("Q", "K"), ("S",)),
    Pass("P = softmax(S)", ("S",), ("S",)),
    Pass("O = P V", ("S", "V"), ("O",)),
)
"""The paper's Algorithm 0: 2 reads and 2 writes of the N^2 matrix."""

OURS_STANDARD = (
    Pass("scores = Q K^T", ("Q", "K"), ("S",)),
    Pass("scores *= scale (in place)", ("S",), ("S",)),
    Pass("~mask", ("mask",), ("mask",), only_when_masked=True),
    Pass("masked_fill_(~mask, -inf)", ("S", "mask"), ("S",), only_when_masked=True),
    Pass("row max", ("S",), ()),
    Pass("x - max", ("S",), ("S",)),
    Pass("exp", ("S",), ("S",)),
    Pass("row sum", ("S",), ()),
    Pass("exp / sum", ("S",), ("S",)),
    Pass("O = P V", ("S", "V"), ("O",)),
)
"""layers.attention.scaled_dot_product_attention with layers.softmax: 7 reads and 5 writes of
the N^2 matrix unmasked, 8 and 6 with a mask (plus 2 reads and 1 write of the boolean mask:
`~mask` is one more pass)."""


@dataclass
class Traffic:
    """Bytes read from and written to slow memory, by tensor name, for all batch x heads."""

    reads: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    computed_pairs: int = 0
    skipped_pairs: int = 0

    def add(self, table: dict[str, int], name: str, count: int) -> None:
        table[name] = table.get(name, 0) + count

    @property
    def read_bytes(self) -> int:
        return sum(self.reads.values())

    @property
    def written_bytes(self) -> int:
        return sum(self.writes.values())

    @property
    def total_bytes(self) -> int:
        return self.read_bytes + self.written_bytes


def standard_io(
    n_q: int,
    n_k: int,
    d: int,
    element_bytes: int,
    *,
    masked: bool = False,
    passes: tuple[Pass, ...] = OURS_STANDARD,
    batch_heads: int = 1,
) -> Traffic:
    """Bytes moved by materialised attention, one read per input and one write per output of
    every pass in `passes` (row statistics left out). Theta(N d + N^2)."""
    _check_positive(n_q=n_q, n_k=n_k, d=d, element_bytes=element_bytes, batch_heads=batch_heads)
    nbytes = {
        name: batch_heads * count * element_bytes
        for name, count in (
            ("Q", n_q * d),
            ("K", n_k * d),
            ("V", n_k * d),
            ("O", n_q * d),
            ("S", n_q * n_k),
        )
    }
    nbytes["mask"] = batch_heads * n_q * n_k  # booleans, one byte each
    traffic = Traffic()
    for step in passes:
        if step.only_when_masked and not masked:
            continue
        for name in step.reads:
            traffic.add(traffic.reads, name, nbytes[name])
        for name in step.writes:
            traffic.add(traffic.writes, name, nbytes[name])
    return traffic


def block_pairs(
    n_q: int, n_k: int, block_q: int, block_k: int, causal: bool
) -> list[tuple[int, int, bool]]:
    """Every (query block i, key block j, computed?) in row-major order. Causal alignment as in
    layers.masks.causal_mask: query row r sits at key index r + (n_k - n_q), so a pair is skipped
    when its first key lies after its last query."""
    _check_positive(n_q=n_q, n_k=n_k, block_q=block_q, block_k=block_k)
    offset = n_k - n_q
    pairs = []
    for i in range(math.ceil(n_q / block_q)):
        last_query = min((i + 1) * block_q, n_q) - 1 + offset
        for j in range(math.ceil(n_k / block_k)):
            pairs.append((i, j, not (causal and j * block_k > last_query)))
    return pairs


def tiled_io(
    n_q: int,
    n_k: int,
    d: int,
    element_bytes: int,
    *,
    block_q: int,
    block_k: int,
    loop_order: str = "fa2",
    causal: bool = False,
    batch_heads: int = 1,
    stat_bytes: int = 4,
) -> Traffic:
    """Bytes moved by the tiled forward pass in `loop_order` (see the module docstring).
    `stat_bytes` is the size of one row statistic (m, l or L; float32 unless the inputs are
    float64). Theta(N^2 d^2 / M) with the paper's block sizes."""
    if loop_order not in LOOP_ORDERS:
        raise LLMInternalsError(
            f"loop order {loop_order!r} is not one of {LOOP_ORDERS}", hint="--loop-order fa2|fa1"
        )
    _check_positive(n_q=n_q, n_k=n_k, d=d, element_bytes=element_bytes, block_q=block_q,
                    block_k=block_k, batch_heads=batch_heads, stat_bytes=stat_bytes)  # fmt: skip
    rows = _block_lengths(n_q, block_q)
    cols = _block_lengths(n_k, block_k)
    row_bytes, stat = d * element_bytes * batch_heads, stat_bytes * batch_heads
    traffic = Traffic()
    add_read = lambda name, count: traffic.add(traffic.reads, name, count)  # noqa: E731
    add_write = lambda name, count: traffic.add(traffic.writes, name, count)  # noqa: E731
    for i, j, computed in block_pairs(n_q, n_k, block_q, block_k, causal):
        if not computed:
            traffic.skipped_pairs += 1
            continue
        traffic.computed_pairs += 1
        if loop_order == "fa2":
            add_read("K", cols[j] * row_bytes)
            add_read("V", cols[j] * row_bytes)
        else:
            for name in ("Q", "O"):
                add_read(name, rows[i] * row_bytes)
            add_write("O", rows[i] * row_bytes)
            for name in ("m", "l"):
                add_read(name, rows[i] * stat)
                add_write(name, rows[i] * stat)
    if loop_order == "fa2":
        add_read("Q", n_q * row_bytes)
        add_write("O", n_q * row_bytes)
        add_write("L", n_q * stat)
    else:
        add_read("K", n_k * row_bytes)
        add_read("V", n_k * row_bytes)
    return traffic


def paper_block_sizes(sram_bytes: int, d: int, element_bytes: int) -> tuple[int, int]:
    """(B_r, B_c) of the paper's Algorithm 1 for an SRAM of `sram_bytes`: with M elements,
    B_c = ceil(M / 4d) (K_j, V_j, Q_i, O_i of that many rows fit in M) and B_r = min(B_c, d)."""
    _check_positive(sram_bytes=sram_bytes, d=d, element_bytes=element_bytes)
    m = sram_bytes // element_bytes
    block_k = math.ceil(m / (4 * d))
    return min(block_k, d), block_k


def _block_lengths(n: int, block: int) -> list[int]:
    return [min(block, n - start) for start in range(0, n, block)]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not (isinstance(value, int) and value >= 1):
            raise LLMInternalsError(
                f"{name} must be a positive integer, got {value!r}",
                hint="sizes and block sizes are counts of rows or bytes (>= 1)",
            )
