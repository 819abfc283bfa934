"""The tiled forward pass with online softmax, in both loop orders (spec: flash-attention.md 5.1).

For one query block Q_i (B_r rows) and key/value blocks K_j, V_j (B_c rows), each row keeps a
running max m, a running sum l and an unnormalised accumulator A:

    S    = scale Q_i K_j^T                   (masked entries -inf)
    m'   = max(m, rowmax(S))
    P~   = exp(S - m')                        (the rescale below keeps old terms consistent)
    l'   = exp(m - m') l + rowsum(P~)
    A'   = exp(m - m') A + P~ V_j
    O_i  = A / l,   L_i = m + log l           (after the last key block)

FA2 (`forward_fa2`, the default): query blocks outside, so m, l, A live "on chip" for the whole
inner loop and O_i is normalised once. FA1 (`forward_fa1`): key blocks outside; O, m, l live in
"slow memory" and each visit reads and rewrites them, with O kept normalised (Dao et al. 2022,
Algorithm 1, using the block's own max m~ for P~). Same results up to rounding.

A row with no visible key so far has m = -inf; its exponents are taken against 0 instead
(exp(-inf - (-inf)) would be NaN), so it keeps l = 0, A = 0 and ends with O = 0, L = -inf.
"""

from __future__ import annotations

import torch

from llm_internals.layers.flash_tiles import NEG_INF, Tiles, finite_or_zero, masked_scores
from llm_internals.trace import record


def forward_fa2(
    tiles: Tiles, q: torch.Tensor, recording: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query blocks outside, key blocks inside. q = scale * Q in rows. Returns O, L in rows."""
    z, n_rows = q.shape[:2]
    out = q.new_empty(z, n_rows, tiles.v.shape[-1])
    lse = q.new_empty(z, n_rows)
    for i, (i0, i1) in enumerate(tiles.q_blocks()):
        rows = tiles.rows(i0, i1)
        qi = q[:, rows]
        tiles.count("Q", qi)
        m = qi.new_full(qi.shape[:2], NEG_INF)
        l_sum = qi.new_zeros(qi.shape[:2])
        acc = qi.new_zeros(*qi.shape[:2], tiles.v.shape[-1])
        for j, (j0, j1) in enumerate(tiles.k_blocks()):
            if not tiles.visible(i0, i1, j0):
                tiles.tally(computed=False)
                if recording:
                    record("flash.pair", (i, j, "skipped"))
                continue
            tiles.tally(computed=True)
            vj = tiles.v[:, j0:j1]
            tiles.count("K", tiles.k[:, j0:j1])
            tiles.count("V", vj)
            scores, masked = masked_scores(tiles, qi, i0, i1, j0, j1)
            m_new = torch.maximum(m, scores.amax(dim=-1))
            m_ref = finite_or_zero(m_new) if masked else m_new
            p = scores.sub_(m_ref[..., None]).exp_()
            rescale = torch.exp(m - m_ref)  # exp(m_old - m_new): older terms were against m_old
            l_sum.mul_(rescale).add_(p.sum(dim=-1))
            acc.mul_(rescale[..., None]).baddbmm_(p, vj)
            m = m_new
            if recording:
                tiles.record_step(i, j, m, l_sum)
        out[:, rows] = acc / torch.where(l_sum > 0, l_sum, 1.0)[..., None]
        lse[:, rows] = m + torch.log(l_sum)
        tiles.count("O", out[:, rows], read=False)
        tiles.count("L", lse[:, rows], read=False)
    return out, lse


def forward_fa1(
    tiles: Tiles, q: torch.Tensor, recording: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks outside, query blocks inside; O (normalised), m, l updated in place."""
    z, n_rows = q.shape[:2]
    out = q.new_zeros(z, n_rows, tiles.v.shape[-1])
    m = q.new_full((z, n_rows), NEG_INF)
    l_sum = q.new_zeros(z, n_rows)
    for name, tensor in (("O", out), ("m", m), ("l", l_sum)):
        tiles.count(name, tensor, read=False)
    for j, (j0, j1) in enumerate(tiles.k_blocks()):
        vj = tiles.v[:, j0:j1]
        tiles.count("K", tiles.k[:, j0:j1])
        tiles.count("V", vj)
        for i, (i0, i1) in enumerate(tiles.q_blocks()):
            if not tiles.visible(i0, i1, j0):
                tiles.tally(computed=False)
                if recording:
                    record("flash.pair", (i, j, "skipped"))
                continue
            tiles.tally(computed=True)
            rows = tiles.rows(i0, i1)
            qi, out_i, m_i, l_i = q[:, rows], out[:, rows], m[:, rows], l_sum[:, rows]
            for name, tensor in (("Q", qi), ("O", out_i), ("m", m_i), ("l", l_i)):
                tiles.count(name, tensor)
            scores, masked = masked_scores(tiles, qi, i0, i1, j0, j1)
            m_block = scores.amax(dim=-1)
            p = scores.sub_(finite_or_zero(m_block)[..., None]).exp_()
            m_new = torch.maximum(m_i, m_block)
            m_ref = finite_or_zero(m_new) if masked else m_new
            old_weight = torch.exp(m_i - m_ref) * l_i  # l e^{m - m_new}
            block_weight = torch.exp(m_block - m_ref)  # e^{m~ - m_new}
            l_new = old_weight + block_weight * p.sum(dim=-1)
            divisor = torch.where(l_new > 0, l_new, 1.0)
            pv = torch.bmm(p, vj)
            out_i.mul_((old_weight / divisor)[..., None]).add_(
                pv.mul_((block_weight / divisor)[..., None])
            )
            m_i.copy_(m_new)
            l_i.copy_(l_new)
            for name, tensor in (("O", out_i), ("m", m_i), ("l", l_i)):
                tiles.count(name, tensor, read=False)
            if recording:
                tiles.record_step(i, j, m_i, l_i)
    lse = m + torch.log(l_sum)
    for name, tensor in (("m", m), ("l", l_sum)):
        tiles.count(name, tensor)
    tiles.count("L", lse, read=False)
    return out, lse
