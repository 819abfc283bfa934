"""The Triton kernels of FlashAttention-2: one forward kernel and three backward kernels.

Layout: every tensor is contiguous (batch * heads, N, d); Q, O, dO, dQ have `heads` heads, K, V,
dK, dV have `kv_heads` (GQA: query head h reads key/value head h // (heads // kv_heads)).
Query row i sits at absolute position i + offset with offset = N_k - N_q (bottom-right aligned,
as in decode and chunked prefill), so with `CAUSAL` it may see key j iff j <= i + offset.

Scores are kept in base 2, as in the Triton tutorial: qk_scale = scale * log2(e), so
exp(scale * q.k - m) = exp2(qk_scale * q.k - m'). The saved log-sum-exp is natural (the same L
as the PyTorch reference); the kernels convert on load.

Forward (grid: query blocks x batch*heads), for one block of BLOCK_M query rows:
    m = -inf, l = 0, acc = 0
    for each key block (in causal mode, only up to the block's last visible key):
        s = qk_scale * Q K^T (masked: -inf);  m' = max(m, rowmax s);  p = exp2(s - m')
        l = exp2(m - m') l + rowsum p;  acc = exp2(m - m') acc + p V;  m = m'
    O = acc / l;  L = (m + log2 l) * ln 2      (a row that sees no key: O = 0, L = -inf)
Backward, with D = rowsum(dO * O) (`delta_kernel`) and P = exp2(qk_scale * Q K^T - L log2 e):
    dV = P^T dO,  dS = P * (dO V^T - D),  dK = scale * dS^T Q   (`dkdv_kernel`: a key block owns
    its dK, dV and loops over query blocks of every query head of its group: no atomics)
    dQ = scale * dS K                                            (`dq_kernel`: a query block
    owns its dQ and loops over key blocks, as in the forward)
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _visible(rows, cols, n_q, n_k, offset, CAUSAL: tl.constexpr):
    """Which (query row, key column) pairs attend: both in range and, when causal, the key no
    later than the query. `rows` and `cols` broadcast: [M, 1] and [1, N], or transposed."""
    ok = (rows < n_q) & (cols < n_k)
    if CAUSAL:
        ok = ok & (cols <= rows + offset)
    return ok


@triton.jit
def _load_rows(base, rows, n_rows, dims, HEAD_DIM: tl.constexpr, TRANSPOSED: tl.constexpr):
    """A [rows, BLOCK_D] tile of a (n_rows, HEAD_DIM) matrix (or [BLOCK_D, rows] when
    TRANSPOSED); rows past n_rows and dims past HEAD_DIM read 0. One return statement: the
    compiler checks every return of a jit function, even one after a constexpr branch's."""
    if TRANSPOSED:
        offsets = rows[None, :] * HEAD_DIM + dims[:, None]
        mask = (rows[None, :] < n_rows) & (dims[:, None] < HEAD_DIM)
    else:
        offsets = rows[:, None] * HEAD_DIM + dims[None, :]
        mask = (rows[:, None] < n_rows) & (dims[None, :] < HEAD_DIM)
    return tl.load(base + offsets, mask=mask, other=0.0)


@triton.jit
def _store_rows(base, tile, rows, n_rows, dims, HEAD_DIM: tl.constexpr):
    mask = (rows[:, None] < n_rows) & (dims[None, :] < HEAD_DIM)
    tl.store(base + rows[:, None] * HEAD_DIM + dims[None, :], tile.to(base.dtype.element_ty),
             mask=mask)  # fmt: skip


@triton.jit
def _kv_head(bh, heads, kv_heads):
    """The flat (batch, kv head) index that query head `bh` = batch * heads + h reads."""
    return (bh // heads) * kv_heads + (bh % heads) // (heads // kv_heads)


@triton.jit
def _key_end(start_m, n_k, offset, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """One past the last key any row of the query block starting at start_m may see: in causal
    mode the key blocks past it are fully masked and skipped, never loaded."""
    end = n_k
    if CAUSAL:
        end = tl.minimum(n_k, start_m + BLOCK_M + offset)
    return end


@triton.jit
def forward_kernel(Q, K, V, O, LSE, qk_scale, n_q, n_k, offset, heads, kv_heads,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                   PRECISION: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    kv_bh = _kv_head(bh, heads, kv_heads)
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q = _load_rows(Q + bh * n_q * HEAD_DIM, rows, n_q, dims, HEAD_DIM, False)
    k_base, v_base = K + kv_bh * n_k * HEAD_DIM, V + kv_bh * n_k * HEAD_DIM
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, _key_end(start_m, n_k, offset, BLOCK_M, CAUSAL), BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k_t = _load_rows(k_base, cols, n_k, dims, HEAD_DIM, True)
        s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
        visible = _visible(rows[:, None], cols[None, :], n_q, n_k, offset, CAUSAL)
        s = tl.where(visible, s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # no key seen yet: avoid -inf - -inf
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m - m_safe)  # rescales the old statistics to the new max (0 at first)
        v = _load_rows(v_base, cols, n_k, dims, HEAD_DIM, False)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    l_safe = tl.where(l == 0.0, 1.0, l)
    _store_rows(O + bh * n_q * HEAD_DIM, acc / l_safe[:, None], rows, n_q, dims, HEAD_DIM)
    lse = tl.where(l == 0.0, -float("inf"), (m + tl.log2(l_safe)) * 0.6931471805599453)  # ln 2
    tl.store(LSE + bh * n_q + rows, lse, mask=rows < n_q)


@triton.jit
def delta_kernel(O, DO, DELTA, n_q, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_M: tl.constexpr):  # fmt: skip
    """D = rowsum(dO * O) = rowsum(P * dP): the softmax Jacobian's correction term, per row."""
    bh = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    o = _load_rows(O + bh * n_q * HEAD_DIM, rows, n_q, dims, HEAD_DIM, False).to(tl.float32)
    do = _load_rows(DO + bh * n_q * HEAD_DIM, rows, n_q, dims, HEAD_DIM, False).to(tl.float32)
    tl.store(DELTA + bh * n_q + rows, tl.sum(o * do, 1), mask=rows < n_q)


@triton.jit
def _row_stats(LSE, DELTA, bh, rows, n_q):
    """L in base 2 (0 for a row that sees no key: all its P entries are masked anyway) and D."""
    lse = tl.load(LSE + bh * n_q + rows, mask=rows < n_q, other=0.0)
    lse = tl.where(lse == -float("inf"), 0.0, lse) * 1.4426950408889634  # log2(e)
    return lse, tl.load(DELTA + bh * n_q + rows, mask=rows < n_q, other=0.0)


@triton.jit
def dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, scale, qk_scale, n_q, n_k, offset, heads,
                kv_heads, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                PRECISION: tl.constexpr):  # fmt: skip
    """dK, dV of one key block, computed transposed (keys as rows) so no tile is transposed
    in registers but Q's, which is loaded transposed."""
    start_n = tl.program_id(0) * BLOCK_N
    kv_bh = tl.program_id(1).to(tl.int64)
    cols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    k = _load_rows(K + kv_bh * n_k * HEAD_DIM, cols, n_k, dims, HEAD_DIM, False)
    v = _load_rows(V + kv_bh * n_k * HEAD_DIM, cols, n_k, dims, HEAD_DIM, False)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    group = heads // kv_heads
    start_m = 0
    if CAUSAL:  # query rows before start_n - offset see none of these keys: skip their blocks
        start_m = tl.maximum(start_n - offset, 0) // BLOCK_M * BLOCK_M
    for g in range(0, group):
        bh = (kv_bh // kv_heads) * heads + (kv_bh % kv_heads) * group + g
        q_base, do_base = Q + bh * n_q * HEAD_DIM, DO + bh * n_q * HEAD_DIM
        for block_m in range(start_m, n_q, BLOCK_M):
            rows = block_m + tl.arange(0, BLOCK_M)
            q_t = _load_rows(q_base, rows, n_q, dims, HEAD_DIM, True)
            do = _load_rows(do_base, rows, n_q, dims, HEAD_DIM, False)
            lse, delta = _row_stats(LSE, DELTA, bh, rows, n_q)
            s_t = tl.dot(k, q_t, input_precision=PRECISION) * qk_scale
            visible = _visible(rows[None, :], cols[:, None], n_q, n_k, offset, CAUSAL)
            p_t = tl.where(visible, tl.exp2(s_t - lse[None, :]), 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), input_precision=PRECISION)
    _store_rows(DK + kv_bh * n_k * HEAD_DIM, dk * scale, cols, n_k, dims, HEAD_DIM)
    _store_rows(DV + kv_bh * n_k * HEAD_DIM, dv, cols, n_k, dims, HEAD_DIM)


@triton.jit
def dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, scale, qk_scale, n_q, n_k, offset, heads, kv_heads,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    kv_bh = _kv_head(bh, heads, kv_heads)
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    q = _load_rows(Q + bh * n_q * HEAD_DIM, rows, n_q, dims, HEAD_DIM, False)
    do = _load_rows(DO + bh * n_q * HEAD_DIM, rows, n_q, dims, HEAD_DIM, False)
    lse, delta = _row_stats(LSE, DELTA, bh, rows, n_q)
    k_base, v_base = K + kv_bh * n_k * HEAD_DIM, V + kv_bh * n_k * HEAD_DIM
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, _key_end(start_m, n_k, offset, BLOCK_M, CAUSAL), BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k_t = _load_rows(k_base, cols, n_k, dims, HEAD_DIM, True)
        v_t = _load_rows(v_base, cols, n_k, dims, HEAD_DIM, True)
        s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
        visible = _visible(rows[:, None], cols[None, :], n_q, n_k, offset, CAUSAL)
        p = tl.where(visible, tl.exp2(s - lse[:, None]), 0.0)
        ds = p * (tl.dot(do, v_t, input_precision=PRECISION) - delta[:, None])
        dq += tl.dot(ds.to(k_t.dtype), tl.trans(k_t), input_precision=PRECISION)
    _store_rows(DQ + bh * n_q * HEAD_DIM, dq * scale, rows, n_q, dims, HEAD_DIM)
