"""What the tiled attention loops touch: block pairs computed or skipped, bytes moved.

Flash attention's claim is about memory traffic: standard attention writes and reads the N x N
score and probability matrices in slow memory (HBM on a GPU, RAM here), the tiled version only
Q, K, V, O and a few per-row statistics, several times over. `FlashCounters` counts what the
loops of layers/flash_forward.py and layers/flash_backward.py actually load from and store to
"slow memory" (the full tensors) as opposed to "fast memory" (the per-block temporaries), so the
IO model in layers/flash_io.py can be checked against the implementation.

Counting rules (one `PassCounts` for the forward pass, one for the backward pass):
- A block pair (i, j) is query block i (block_q query positions) against key block j (block_k
  key positions), for ALL leading dims (batch, heads) at once: one pair = one batched tile op.
  `blocks_skipped` counts pairs the causal mask hides entirely (never loaded, never computed).
- Bytes are numel x element_size of the slice loaded or stored, summed over the leading dims,
  in the dtype of the stored tensor: Q, K, V, O, dO, dQ, dK, dV in the input dtype (bf16: 2
  bytes, even though the arithmetic is fp32); the row statistics L (log-sum-exp), m, l (FA1) and
  D (backward) in the dtype of L (fp32 for bf16/fp32 inputs, fp64 for fp64). With grouped-query
  attention a K/V block holds kv_heads heads: it is loaded once for its whole group.
- FA2 forward: Q_i read once per query block; K_j, V_j read once per computed pair; O_i and
  L_i written once per query block.
- FA1 forward: O, m, l are initialised in slow memory (one write each, like Algorithm 1 of the
  paper); K_j, V_j read once per key block (outer loop); at every computed pair Q_i, O_i, m_i,
  l_i are read and O_i, m_i, l_i written; at the end m and l are read and L written.
- Backward (both loop orders; K/V blocks outer, as in both papers): O and dO read once and D
  written (D = rowsum(dO * O)); dQ initialised (one write); per key block K_j, V_j read and
  dK_j, dV_j written once; per computed pair Q_i, dO_i, L_i, D_i read and dQ_i read and written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PassCounts:
    """Block pairs and bytes per tensor name ("Q", "K", "V", "O", "L", "m", "l", "D", "dO",
    "dQ", "dK", "dV") of one pass."""

    blocks_computed: int = 0
    blocks_skipped: int = 0
    read: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)

    @property
    def bytes_read(self) -> int:
        return sum(self.read.values())

    @property
    def bytes_written(self) -> int:
        return sum(self.written.values())

    def load(self, name: str, n_bytes: int) -> None:
        self.read[name] += n_bytes

    def store(self, name: str, n_bytes: int) -> None:
        self.written[name] += n_bytes


@dataclass
class FlashCounters:
    """Filled by flash_attention(..., counters=FlashCounters()); see the module docstring.

    `blocks_computed` / `blocks_skipped` are the forward pass's; `bytes_read` / `bytes_written`
    sum both passes (the backward part is zero until backward runs).
    """

    forward: PassCounts = field(default_factory=PassCounts)
    backward: PassCounts = field(default_factory=PassCounts)

    @property
    def blocks_computed(self) -> int:
        return self.forward.blocks_computed

    @property
    def blocks_skipped(self) -> int:
        return self.forward.blocks_skipped

    @property
    def bytes_read(self) -> int:
        return self.forward.bytes_read + self.backward.bytes_read

    @property
    def bytes_written(self) -> int:
        return self.forward.bytes_written + self.backward.bytes_written
