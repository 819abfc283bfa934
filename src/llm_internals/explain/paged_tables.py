"""Tables of the `paged-attention` lesson read from an engine's `PoolSnapshot`: the physical
pool block by block, the reference counts of shared blocks, and each sample's block table.
"""

from __future__ import annotations

from llm_internals.inference.paged.snapshot import PoolSnapshot
from llm_internals.tokenizer.char import CharTokenizer


def pool_rows(snapshot: PoolSnapshot, tok: CharTokenizer) -> list[list]:
    """One row per physical block: state, ref count, holders, filled slots, tokens held."""
    rows = []
    for block in snapshot.blocks:
        holders = snapshot.holders(block.block_id)
        text = ""
        if holders:
            seq = holders[-1]
            i = seq.block_table.index(block.block_id)
            text = tok.decode(list(seq.block_tokens(i, snapshot.block_size)))
        rows.append([block.block_id, block.state, block.ref_count,
                     ", ".join(s.request_id for s in holders), len(text), repr(text)])  # fmt: skip
    return rows


def ref_rows(snapshot: PoolSnapshot) -> list[list]:
    """Blocks in use: id, ref count, and the samples whose tables hold it."""
    held = sorted({b for seq in snapshot.sequences for b in seq.block_table})
    return [[b, snapshot.blocks[b].ref_count,
             ", ".join(f"{s.request_id}#{s.index}" for s in snapshot.holders(b))]
            for b in held]  # fmt: skip


def sample_rows(snapshot: PoolSnapshot, tok: CharTokenizer, request: str) -> list[list]:
    return [[s.index, repr(tok.decode(list(s.token_ids))), s.num_computed_tokens,
             str(list(s.block_table))] for s in snapshot.samples(request)]  # fmt: skip
