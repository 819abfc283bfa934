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
    fa1 (outer loop over key/value blocks j, the paper's Algorithm 1):  initialise O, m, l in
        slow memory; read K_j and V_j once; for each block pair not skipped, read Q_i, O_i, m_i,
        l_i and write O_i, m_i, l_i; finally read m, l and write L.

The backward pass (`tiled_backward_io`) recomputes P block by block from Q, K and L; these
counts follow the rules of layers/flash_counters.py, which the tests compare exactly against the
counters of the real loops (`FlashCounters`).

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

    def read(self, **nbytes: int) -> None:
        for name, count in nbytes.items():
            self.reads[name] = self.reads.get(name, 0) + count

    def write(self, **nbytes: int) -> None:
        for name, count in nbytes.items():
            self.writes[name] = self.writes.get(name, 0) + count

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
        traffic.read(**{name: nbytes[name] for name in step.reads})
        traffic.write(**{name: nbytes[name] for name in step.writes})
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


@dataclass(frozen=True)
class Tiling:
    """A tiled attention problem: N_q queries and N_k keys of head dim d, in blocks of block_q
    and block_k, for `heads` query heads (batch x heads; all are one batched tile op) and
    `kv_heads` key/value heads (fewer with grouped-query attention: a K/V block is loaded once
    for its whole group). `stat_bytes` is the size of one row statistic (m, l, L, D: float32,
    or float64 for float64 inputs)."""

    n_q: int
    n_k: int
    d: int
    element_bytes: int
    block_q: int
    block_k: int
    causal: bool = False
    heads: int = 1
    kv_heads: int | None = None
    stat_bytes: int = 4

    def __post_init__(self) -> None:
        _check_positive(n_q=self.n_q, n_k=self.n_k, d=self.d, element_bytes=self.element_bytes,
                        block_q=self.block_q, block_k=self.block_k, heads=self.heads,
                        kv_heads=self.kv_heads or 1, stat_bytes=self.stat_bytes)  # fmt: skip

    def q_bytes(self, rows: int) -> int:
        """Bytes of `rows` positions of Q, O, dO or dQ (all query heads)."""
        return rows * self.d * self.element_bytes * self.heads

    def kv_bytes(self, rows: int) -> int:
        """Bytes of `rows` positions of K, V, dK or dV (all key/value heads)."""
        return rows * self.d * self.element_bytes * (self.kv_heads or self.heads)

    def stat(self, rows: int) -> int:
        """Bytes of `rows` positions of a row statistic (all query heads)."""
        return rows * self.stat_bytes * self.heads

    def pairs(self) -> list[tuple[int, int, bool]]:
        return block_pairs(self.n_q, self.n_k, self.block_q, self.block_k, self.causal)


def tiled_io(tiling: Tiling, loop_order: str = "fa2") -> Traffic:
    """Bytes moved by the tiled forward pass in `loop_order` (see the module docstring; FA1 also
    initialises O, m, l in slow memory and finally reads m, l to write L, as Algorithm 1 does).
    Theta(N^2 d^2 / M) with the paper's block sizes."""
    if loop_order not in LOOP_ORDERS:
        raise LLMInternalsError(
            f"loop order {loop_order!r} is not one of {LOOP_ORDERS}", hint="--loop-order fa2|fa1"
        )
    t, traffic = tiling, Traffic()
    rows, cols = _block_lengths(t.n_q, t.block_q), _block_lengths(t.n_k, t.block_k)
    if loop_order == "fa1":
        traffic.write(O=t.q_bytes(t.n_q), m=t.stat(t.n_q), l=t.stat(t.n_q))
        traffic.read(K=t.kv_bytes(t.n_k), V=t.kv_bytes(t.n_k))
    for i, j, computed in t.pairs():
        if not computed:
            traffic.skipped_pairs += 1
            continue
        traffic.computed_pairs += 1
        if loop_order == "fa2":
            traffic.read(K=t.kv_bytes(cols[j]), V=t.kv_bytes(cols[j]))
        else:
            traffic.read(Q=t.q_bytes(rows[i]), O=t.q_bytes(rows[i]), m=t.stat(rows[i]),
                         l=t.stat(rows[i]))  # fmt: skip
            traffic.write(O=t.q_bytes(rows[i]), m=t.stat(rows[i]), l=t.stat(rows[i]))
    if loop_order == "fa2":
        traffic.read(Q=t.q_bytes(t.n_q))
        traffic.write(O=t.q_bytes(t.n_q))
    else:
        traffic.read(m=t.stat(t.n_q), l=t.stat(t.n_q))
    traffic.write(L=t.stat(t.n_q))
    return traffic


def tiled_backward_io(tiling: Tiling) -> Traffic:
    """Bytes moved by the recomputing backward pass (spec 5.2; K/V blocks outside in both
    papers): O and dO read once to write D = rowsum(dO * O); dQ initialised; per key block K_j,
    V_j read and dK_j, dV_j written once; per computed pair Q_i, dO_i, L_i, D_i read and dQ_i
    read and written (accumulated in slow memory)."""
    t, traffic = tiling, Traffic()
    rows, cols = _block_lengths(t.n_q, t.block_q), _block_lengths(t.n_k, t.block_k)
    traffic.read(O=t.q_bytes(t.n_q), dO=t.q_bytes(t.n_q))
    traffic.write(D=t.stat(t.n_q), dQ=t.q_bytes(t.n_q))
    for n in cols:
        traffic.read(K=t.kv_bytes(n), V=t.kv_bytes(n))
        traffic.write(dK=t.kv_bytes(n), dV=t.kv_bytes(n))
    for i, _, computed in t.pairs():
        if not computed:
            traffic.skipped_pairs += 1
            continue
        traffic.computed_pairs += 1
        traffic.read(Q=t.q_bytes(rows[i]), dO=t.q_bytes(rows[i]), L=t.stat(rows[i]),
                     D=t.stat(rows[i]), dQ=t.q_bytes(rows[i]))  # fmt: skip
        traffic.write(dQ=t.q_bytes(rows[i]))
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
