"""The tiled backward pass: P recomputed per block from Q, K and L (spec 5.2).

With S = scale Q K^T, P = softmax(S), O = P V and the incoming gradient dO:

    dV = P^T dO
    dP = dO V^T
    dS = P o (dP - D),  D = rowsum(dO o O)      (= rowsum(P o dP): softmax's Jacobian)
    dQ = scale dS K,    dK = scale dS^T Q

Nothing N x N is stored: each block of P is rebuilt as exp(S_ij - L_i) from the saved
log-sum-exp L. Key blocks run outside (as in both papers), so dK_j and dV_j accumulate "on
chip" and are written once; dQ_i is read, updated and written at every visited pair. With
grouped-query attention the rows of a K/V head hold its whole group of query heads, so
dS^T Q and P^T dO already sum dK and dV over the group.

Rows with no visible key (L = -inf) use L = 0: all their scores are -inf, so P = 0 and every
gradient through them is 0 (their output is the constant 0).
"""

from __future__ import annotations

import torch

from llm_internals.layers.flash_tiles import Tiles, finite_or_zero, masked_scores
from llm_internals.trace import record


def backward_kv_outer(
    tiles: Tiles,
    q: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    recording: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV (rows layout, compute dtype) from q = scale * Q, O, L and dO in rows."""
    delta = (dout * out).sum(dim=-1)
    tiles.count("O", out)
    tiles.count("dO", dout)
    tiles.count("D", delta, read=False)
    if recording:
        record("flash.D", tiles.from_rows(delta), note="rowsum(dO * O), shape (*q_lead, N_q)")
    lse = finite_or_zero(lse)
    dq = torch.zeros_like(q)
    tiles.count("dQ", dq, read=False)
    dk = torch.empty_like(tiles.k)
    dv = torch.empty_like(tiles.v)
    for j, (j0, j1) in enumerate(tiles.k_blocks()):
        kj, vj = tiles.k[:, j0:j1], tiles.v[:, j0:j1]
        tiles.count("K", kj)
        tiles.count("V", vj)
        dk_j = torch.zeros_like(kj)
        dv_j = torch.zeros_like(vj)
        for i, (i0, i1) in enumerate(tiles.q_blocks()):
            if not tiles.visible(i0, i1, j0):
                tiles.tally(computed=False)
                continue
            tiles.tally(computed=True)
            rows = tiles.rows(i0, i1)
            qi, do_i, lse_i, delta_i, dq_i = (
                q[:, rows],
                dout[:, rows],
                lse[:, rows],
                delta[:, rows],
                dq[:, rows],
            )
            for name, tensor in (
                ("Q", qi),
                ("dO", do_i),
                ("L", lse_i),
                ("D", delta_i),
                ("dQ", dq_i),
            ):
                tiles.count(name, tensor)
            scores, _ = masked_scores(tiles, qi, i0, i1, j0, j1)
            p = scores.sub_(lse_i[..., None]).exp_()
            dv_j.baddbmm_(p.transpose(1, 2), do_i)
            ds = torch.bmm(do_i, vj.transpose(1, 2)).sub_(delta_i[..., None]).mul_(p)
            dq_i.baddbmm_(ds, kj)
            dk_j.baddbmm_(ds.transpose(1, 2), qi)
            tiles.count("dQ", dq_i, read=False)
            if recording:
                record("flash.backward_pair", (i, j))
        dk[:, j0:j1] = dk_j
        dv[:, j0:j1] = dv_j
        tiles.count("dK", dk_j, read=False)
        tiles.count("dV", dv_j, read=False)
    return dq.mul_(scale), dk, dv
