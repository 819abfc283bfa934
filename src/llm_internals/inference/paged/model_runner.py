"""The model runner: turns a scheduled batch into one packed forward, then samples.

For the batch  A: decode (computed 9),  B: prefill chunk of 3 from position 4,  block_size 4,
tables A [5, 1, 8], B [2, 6]:

    input_ids      a9   b4 b5 b6          one row: decodes first, then prefill chunks
    positions       9    4  5  6
    slot_mapping   33   24 25 26          block_table[p // 4] * 4 + p % 4
    decode blocks  A: [5, 1, 8] -> keys of positions 0..11, mask: position < 10
    prefill        B: blocks [2, 6], keys 0..6, query i sees keys j <= 4 + i
    sample rows    a9 (A's next token), b6 only if position 6 is B's last token

A speculating sequence feeds its last token and its draft tokens (slots reserved by the
scheduler) and samples at every one of those rows: the target's logits at each position to
verify (paged/speculation.py); `execute` lists it once per row. Such sequences with the same
number of fed tokens attend as one decode group with that many queries per sequence (query i
sees positions <= its own), between the decodes and the prefill chunks.

Linear layers see 4 tokens, not a padded (2, 7) batch. Only rows whose sequence has no token
left to feed produce logits (the output head is the largest matrix of a small model).
"""

from __future__ import annotations

import torch

from llm_internals.adapters.multi import adapter_rows
from llm_internals.inference.paged.paged_attention import (
    DecodeGroup,
    PagedAttentionContext,
    PrefillChunk,
)
from llm_internals.inference.paged.paged_cache import PagedKVCache
from llm_internals.inference.paged.scheduler import ScheduledBatch
from llm_internals.inference.paged.sequence import Sequence
from llm_internals.inference.sampling import Sampler
from llm_internals.layers.masks import causal_mask
from llm_internals.trace import is_recording, record


class ModelRunner:
    """Runs `model` (a DecoderLM) over packed batches whose K/V live in `pool`."""

    def __init__(self, model: torch.nn.Module, pool: PagedKVCache) -> None:
        self.model = model
        self.pool = pool
        self.sampler = Sampler()
        self.device = next(model.parameters()).device
        self.row_owners: list[Sequence] = []

    def execute(self, batch: ScheduledBatch) -> tuple[list[Sequence], torch.Tensor]:
        """Run one step: (the sequence of each logits row, next-token logits (rows, vocab)).
        A speculating sequence has 1 + len(draft_token_ids) consecutive rows."""
        record("paged.block_copies", list(batch.copies), note="copy-on-write (source, dest)")
        self.pool.copy_blocks(batch.copies)
        ids, positions, context, sample_rows, sample_seqs = self.prepare(batch)
        with torch.inference_mode(), adapter_rows(self.model, self.row_owners):
            hidden = self.model.hidden_states(ids[None], positions=positions[None], cache=context)
            logits = self.model.lm_head(hidden[0, sample_rows])
        return sample_seqs, logits

    def sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """One token per row, each with its sequence's SamplingParams and generator (rows that
        cannot be sampled raise SamplingRowError, which the engine turns into failed samples)."""
        params = [s.params for s in seqs]
        penalties = any(p.uses_penalties for p in params)
        with torch.inference_mode():
            tokens = self.sampler(
                logits,
                params,
                [s.generator for s in seqs],
                prompt_ids=[s.prompt_token_ids for s in seqs] if penalties else None,
                output_ids=[s.output_token_ids for s in seqs] if penalties else None,
            )
        return tokens.tolist()

    def _decode_group(
        self, decodes: list, lengths: list[int], start: int, window: int | None, queries: int = 1
    ) -> DecodeGroup:
        """Block ids (padded with block 0) and the visibility mask of a run of sequences that
        each feed their last `queries` tokens (lengths: tokens up to the last query's)."""
        block_size = self.pool.block_size
        width = -(-max(lengths) // block_size)
        table = [s.block_table[:width] + [0] * (width - len(s.block_table[:width]))
                 for s, _ in decodes]  # fmt: skip
        key = torch.arange(width * block_size, device=self.device)[None, None, :]
        offsets = torch.arange(queries - 1, -1, -1, device=self.device)[None, :]
        length = (torch.tensor(lengths, device=self.device)[:, None] - offsets)[..., None]
        visible = key < length  # (count, queries, keys): query i sees positions < its length
        if window is not None:
            visible &= key >= length - window
        block_ids = torch.tensor(table, device=self.device)
        return DecodeGroup(start, len(decodes), block_ids, visible, queries=queries)

    def prepare(
        self, batch: ScheduledBatch
    ) -> tuple[torch.Tensor, torch.Tensor, PagedAttentionContext, torch.Tensor, list[Sequence]]:
        """Input ids, positions, the attention context, and which rows sample for whom."""
        block_size = self.pool.block_size
        window = getattr(self.model.config, "sliding_window", None)
        sdpa = getattr(self.model.config, "attn_impl", "scratch") == "sdpa"
        work = list(zip(batch.seqs, batch.num_new_tokens, strict=True))
        decodes = [(s, n) for s, n in work if n == 1]
        # fed past its tokens: last token + draft tokens of a speculating sequence
        verifying = [(s, n) for s, n in work if n > 1 and s.num_computed_tokens + n > s.num_tokens]
        prefills = [(s, n) for s, n in work if n > 1 and s.num_computed_tokens + n <= s.num_tokens]

        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        decodes.sort(key=lambda item: item[0].num_computed_tokens)  # similar lengths adjacent
        for seq, _ in decodes:
            p = seq.num_computed_tokens
            ids.append(seq.token_ids[p])
            positions.append(p)
            slots.append(seq.block_table[p // block_size] * block_size + p % block_size)
            if p + 1 == seq.num_tokens:  # else: a one-token prefill chunk
                sample_rows.append(len(ids) - 1)
                sample_seqs.append(seq)
        lengths = [s.num_computed_tokens + 1 for s, _ in decodes]
        groups = []
        for start, end in group_by_length([-(-n // block_size) for n in lengths]):
            groups.append(self._decode_group(decodes[start:end], lengths[start:end], start, window))

        # Speculating sequences (last token + draft tokens): decode-like groups of equal length
        # with one query per fed token; every row samples (the target's p at each position).
        verifying.sort(key=lambda item: (item[1], item[0].num_computed_tokens))
        for queries in sorted({n for _, n in verifying}):
            run = [(s, n) for s, n in verifying if n == queries]
            first_row = len(ids)
            for seq, n in run:
                p = seq.num_computed_tokens
                ids.extend(seq.scheduled_ids(p, p + n))
                positions.extend(range(p, p + n))
                slots.extend(seq.block_table[i // block_size] * block_size + i % block_size
                             for i in range(p, p + n))  # fmt: skip
                sample_rows.extend(range(len(ids) - n, len(ids)))
                sample_seqs.extend([seq] * n)
            lengths = [s.num_computed_tokens + n for s, n in run]
            for start, end in group_by_length([-(-n // block_size) for n in lengths]):
                row = first_row + start * queries
                groups.append(self._decode_group(run[start:end], lengths[start:end], row, window,
                                                 queries))  # fmt: skip

        chunks = []
        for seq, n in prefills:
            start = seq.num_computed_tokens
            end = start + n
            chunk_positions = torch.arange(start, end, device="cpu")  # host-side bookkeeping
            table = torch.tensor(seq.block_table[: -(-end // block_size)], device="cpu")
            chunk_slots = table[chunk_positions // block_size] * block_size + (
                chunk_positions % block_size
            )
            row = len(ids)
            ids.extend(seq.scheduled_ids(start, end))
            positions.extend(range(start, end))
            slots.extend(chunk_slots.tolist())
            use_window = window is not None and end > window
            if start == 0:
                block_ids = None
                mask = None if sdpa and not use_window else causal_mask(
                    n, n, window if use_window else None, device=self.device
                )  # fmt: skip
            else:
                block_ids = table[None].to(self.device)
                mask = causal_mask(n, end, window if use_window else None, device=self.device)
            chunks.append(PrefillChunk(row, n, end, block_ids, mask))
            if end == seq.num_tokens:
                sample_rows.append(row + n - 1)
                sample_seqs.append(seq)

        context = PagedAttentionContext(
            pool=self.pool,
            slot_mapping=torch.tensor(slots, device=self.device),
            decode_groups=groups,
            prefills=chunks,
        )
        # the sequence of each token row (multi-LoRA picks each row's adapter from it)
        self.row_owners = [s for s, _ in decodes] + [s for s, n in verifying + prefills
                                                     for _ in range(n)]  # fmt: skip
        if is_recording():
            record("paged.input_ids", torch.tensor(ids, device="cpu"),
                   note="all scheduled tokens, one row")  # fmt: skip
            record("paged.positions", torch.tensor(positions, device="cpu"),
                   note="position of each token")  # fmt: skip
            record("paged.slot_mapping", context.slot_mapping, note="block * block_size + offset")
            for group in groups:
                record("paged.decode_block_ids", group.block_ids, note="block tables, padded")
            record("paged.row_sequences", [(s.request_id, s.index) for s in self.row_owners],
                   note="(request id, sample index) of each row")  # fmt: skip
            record("paged.sample_rows", list(sample_rows), note="rows whose logits are sampled")
        return (
            torch.tensor(ids, device=self.device),
            torch.tensor(positions, device=self.device),
            context,
            torch.tensor(sample_rows, device=self.device, dtype=torch.long),
            sample_seqs,
        )


GROUP_OVERHEAD_BLOCKS = 16  # a group's fixed cost (a few op launches per layer), in blocks gathered


def group_by_length(blocks: list[int]) -> list[tuple[int, int]]:
    """Split sorted block counts into runs [start, end) minimizing the padded work
    sum(run length x longest in run) + GROUP_OVERHEAD_BLOCKS per run (dynamic programming).

    One group pads every sequence to the longest; one group per sequence pays the fixed cost
    of a gather and an attention call each time. For lengths 2, 3, 40, 41 blocks: two groups.
    """
    n = len(blocks)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sequences
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + (end - start) * blocks[end - 1] + GROUP_OVERHEAD_BLOCKS
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs = []
    end = n
    while end > 0:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]
