"""Lesson "paged-attention": KV memory handed out in blocks, like pages of virtual memory.

Every engine number comes from the real serving engine (`llm_internals.inference.paged.LLM`) run
on a tiny random model, through its public API only: block tables, the physical pool, reference
counts, prefix-cache hashes and K/V come from `LLM.pool_snapshot()` after real steps; the packed
step (ids, positions, slot mapping) and the copy-on-write copies are what the runner records
(`paged.*` under `trace.recording()`); waste figures come from `LLM.stats()`. The contiguous
baselines in "the problem" are arithmetic on the lengths of the same workload (and a first-fit
allocator written here only to show what paging avoids).
"""

from __future__ import annotations

from llm_internals.explain.inputs import LessonInput
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.paged_runs import decode_step_run, fork_run, prefix_run
from llm_internals.explain.paged_tables import pool_rows, ref_rows, sample_rows
from llm_internals.explain.paged_workload import (
    CONTEXT,
    MAX_TOKENS_CAP,
    MEASURED_BLOCK_SIZE,
    OUTPUT_RANGE,
    PROMPT_RANGE,
    SAMPLE_EVERY,
    WORKLOAD_SIZE,
    fragmentation,
    measured_run,
    reservations_at,
    tiny_model,
    waste_figure,
    workload,
)
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import TINY_ALPHABET, tiny_tokenizer
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_memory import load_shape, shape_from_model_config
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM
from llm_internals.tokenizer.char import CharTokenizer

INFO = LessonInfo(
    name="paged-attention",
    title="Paged attention: KV memory in blocks, like virtual memory pages",
    summary="Why contiguous KV reservations waste memory, how block tables map tokens to a "
    "shared pool, the waste measured on a real engine, and sharing with copy-on-write.",
)

ALPHABET = TINY_ALPHABET
BLOCK_SIZE = 4
NUM_BLOCKS = 12
REQUESTS = (("to be or not", 5), ("all the", 4), ("now is the winter", 3))  # (prompt, max_tokens)
SNAPSHOT = 32  # tokens generated per request at the snapshot of "the problem"
POOL_SLOTS = 3072  # a contiguous pool for the fragmentation example
SHARED_REQUEST, SHARED_PROMPT, N_SAMPLES, SAMPLING_SEED = "poem", "to be ", 3, 7
PREFIX_PROMPTS = ("the king is dead", "the king is here")
INPUTS = (
    LessonInput("block_size", "block size (measured run)", MEASURED_BLOCK_SIZE, minimum=1,
                maximum=256, help="token positions per KV block in the measured run: the "
                "waste grows with it, the block tables shrink"),
)  # fmt: skip


def _section_recap(model: DecoderLM) -> Section:
    tiny, gpt2 = shape_from_model_config(model.config), load_shape("gpt2")
    return Section(
        "Recap: the KV cache",
        [
            Step(
                "Generating a token needs the keys and values of every earlier token in every "
                "layer; the KV cache keeps them so each step computes only the new token's. "
                "The memory this takes grows with every token of every sequence being served.",
                formula="bytes per token = 2 (K and V) x layers x kv_heads x head_dim x "
                "bytes_per_element",
                values={
                    "this lesson's tiny model (bytes/token)": tiny.bytes_per_token,
                    "GPT-2, float32 (bytes/token)": gpt2.bytes_per_token,
                },
            ),
            Step(
                "A contiguous cache (`ContiguousKVCache`, and HF's) gives each sequence one "
                "buffer of max_len positions, allocated before generation starts. The server "
                "does not know how long the answer will be, so max_len must cover the longest "
                "answer the request may produce (its max_tokens, or the whole context).",
            ),
        ],
    )


def _section_problem() -> Section:
    lengths = workload()
    gpt2 = load_shape("gpt2")
    rows, (reserved, held, later, never) = reservations_at(lengths, SNAPSHOT)
    sizes, placed, holes = fragmentation(lengths, POOL_SLOTS)
    waiting = len(placed)
    return Section(
        "The problem: reserved memory that holds nothing",
        [
            Step(
                f"A real-sized workload: {WORKLOAD_SIZE} GPT-2 requests with prompts of "
                f"{PROMPT_RANGE[0]}-{PROMPT_RANGE[1]} tokens and answers of {OUTPUT_RANGE[0]}-"
                f"{OUTPUT_RANGE[1]} tokens (seeded), each reserving prompt + max_tokens "
                f"({MAX_TOKENS_CAP}) slots. Snapshot when every request has produced "
                f"{SNAPSHOT} tokens (requests with shorter answers are done). 'Reserved for "
                "later' slots will be filled by tokens not generated yet (reservation); 'never "
                "used' slots lie beyond the answer's real end (internal fragmentation).",
                values={
                    "requests at the snapshot": Table(
                        [
                            "request",
                            "prompt",
                            "answer",
                            "reserved",
                            "holding K/V",
                            "reserved for later",
                            "never used",
                        ],
                        rows,
                    ),  # fmt: skip
                    "share of reserved slots holding K/V": held / reserved,
                    "share reserved for later": later / reserved,
                    "share never used": never / reserved,
                    "reserved MiB (GPT-2, float32)": reserved * gpt2.bytes_per_token / 2**20,
                    "reserving the whole context instead: share holding K/V": held
                    / (len(rows) * CONTEXT),
                },
            ),
            Step(
                f"External fragmentation: in a contiguous pool of {POOL_SLOTS} slots, requests "
                f"0..{waiting - 1} get their reservations one after another and request "
                f"{waiting} waits. The two with the shortest answers finish first and free "
                f"their ranges. Now {sum(s for _, s in holes)} slots are free, more than request "
                f"{waiting} needs ({sizes[waiting]}), yet no single gap is that large: it still "
                "cannot start. A paged pool has no such gaps: any free block fits anywhere.",
                values={
                    "contiguous reservations": Table(
                        ["request", "start", "size"], [list(item) for item in placed]
                    ),
                    "free gaps after two finish": Table(
                        ["start", "size"], [list(h) for h in holes]
                    ),
                    "free slots in total": sum(size for _, size in holes),
                    "largest gap": max(size for _, size in holes),
                    f"request {waiting} needs": sizes[waiting],
                },
            ),
        ],
    )


def _section_analogy() -> Section:
    rows = [
        ["process", "sequence (one sample of a request)"],
        ["virtual address", "token position in the sequence"],
        ["page (e.g. 4 KiB)", f"logical block of block_size token positions (here {BLOCK_SIZE})"],
        ["physical page frame", "physical block in the KV pool (K and V of all layers)"],
        ["page table", "block table: logical block i -> physical block id"],
        ["memory on first touch", "a new block only when the sequence fills its last one"],
        ["fork() + copy-on-write", "parallel samples (n > 1) share the prompt's blocks"],
        ["shared libraries / page cache", "shared prompt prefixes, found by block hash"],
        ["swapping out under pressure", "preemption: free a sequence's blocks, recompute later"],
    ]
    return Section(
        "What paged attention is: virtual memory for the KV cache",
        [
            Step(
                "An operating system does not give a process one contiguous piece of RAM: it "
                "maps fixed-size virtual pages to any free physical frames through a page "
                "table. Paged attention (vLLM) does the same with KV slots: the pool is cut "
                "into blocks, and each sequence's block table says where its positions live.",
                formula="slot(p) = block_table[p // block_size] * block_size + p % block_size",
                values={"the analogy": Table(["operating system", "paged attention"], rows)},
            ),
            Step(
                "Memory is then taken one block at a time as a sequence grows, so a sequence "
                "wastes at most block_size - 1 slots (its last block's empty tail), and every "
                "free block is usable by any sequence. Attention reads a sequence's keys and "
                "values by gathering its blocks in table order.",
            ),
        ],
    )


def _section_how_it_works(model: DecoderLM, tok: CharTokenizer) -> Section:
    packed, snapshot, outputs = decode_step_run(model, tok, REQUESTS, BLOCK_SIZE, NUM_BLOCKS)
    first = REQUESTS[0][0]
    table_rows = []
    for prompt, _ in REQUESTS:
        seq = snapshot.sequence(prompt)
        table_rows.append([prompt, repr(tok.decode(list(seq.token_ids))),
                           seq.num_computed_tokens, str(list(seq.block_table))])  # fmt: skip
    first_seq = snapshot.sequence(first)
    keys = snapshot.keys[0, 0, : first_seq.num_computed_tokens]  # layer 0, head 0
    reference = generate(model, tok, [p for p, _ in REQUESTS], max_new_tokens=2,
                         eos_token_id=None)  # fmt: skip
    same = all(outputs[p].token_ids == r.token_ids
               for (p, _), r in zip(REQUESTS, reference, strict=True))  # fmt: skip
    return Section(
        "How it works: block tables and the physical pool",
        [
            Step(
                f"The real engine with block_size {BLOCK_SIZE} and a pool of {NUM_BLOCKS} "
                f"blocks, on three prompts (greedy). Step 1 prefilled all three prompts in one "
                "packed forward and sampled a first token each; step 2 (below) fed each "
                "sequence its newest token. Each block table lists the physical blocks in "
                "position order; 'K/V stored' counts the positions written so far.",
                values={
                    "block tables after step 2": Table(
                        ["request", "tokens so far", "K/V stored", "block table"], table_rows
                    ),
                    "physical pool": Table(
                        ["block", "state", "ref count", "held by", "filled slots", "tokens"],
                        pool_rows(snapshot, tok),
                    ),
                },
            ),
            Step(
                "Step 2 as the model saw it (captured from the runner): one packed row with one "
                "token per sequence (no padding; the runner orders decodes by length), its "
                "position, and the slot its K/V was written to, from the block table by the "
                "formula above.",
                formula="slot = block_table[p // block_size] * block_size + p % block_size",
                values={
                    "packed step": Table(["request", "token", "position", "slot"], packed),
                },
            ),
            Step(
                f"Attention gathers each sequence's blocks in table order, which lays their "
                f"slots out as positions 0, 1, 2, ... again. Layer 0, head 0 keys of "
                f"{first!r} read by the pool's own gather (`PagedKVCache.gather`, what "
                f"attention calls) from blocks {list(first_seq.block_table)}: the "
                "same keys a contiguous cache would hold, and the engine's greedy tokens equal "
                "those of the contiguous-cache `generate`.",
                values={
                    "gathered keys (positions x head_dim)": keys,
                    "same tokens as contiguous generate": same,
                },  # fmt: skip
            ),
        ],
    )


def _section_effective(tok: CharTokenizer, block_size: int = MEASURED_BLOCK_SIZE) -> Section:
    rows, waste, lengths, contiguous = measured_run(tok, block_size)
    return Section(
        "Why it is so effective: the measured waste",
        [
            Step(
                f"The {WORKLOAD_SIZE} requests of 'the problem' served by the real engine "
                f"(block_size {block_size}; a tiny random model with GPT-2's context "
                "stands in for GPT-2, the block bookkeeping is the same), all submitted at "
                "once. After every step the engine's stats() count slots holding K/V against "
                "slots in allocated blocks. Only the last block of each sequence can be partly "
                "empty, so the waste stays below running x (block_size - 1) slots.",
                formula="waste = 1 - slots holding K/V / (blocks in use x block_size)",
                values={
                    f"sampled every {SAMPLE_EVERY} steps": Table(
                        [
                            "step",
                            "running",
                            "slots holding K/V",
                            "blocks in use",
                            "slots allocated",
                            "waste",
                        ],
                        rows,
                    ),  # fmt: skip
                    "steps": len(waste),
                    "mean waste over all steps": sum(waste) / len(waste),
                    "peak waste": max(waste),
                },
                figures=[waste_figure(waste, contiguous, block_size)],
            ),
            Step(
                "The same requests with contiguous reservations waste most of what they hold "
                "(previous section). The vLLM paper (Kwon et al., 2023) measured the same picture "
                "on GPUs: 20-38% of the KV memory of earlier servers held token states, about 96% "
                "with paging. Less waste means more sequences in the batch, and decoding "
                "throughput grows with the batch.",
            ),
        ],
    )


def _parallel_sampling(model: DecoderLM, tok: CharTokenizer) -> list[Step]:
    params = SamplingParams(temperature=1.0, seed=SAMPLING_SEED, n=N_SAMPLES, max_tokens=3,
                            ignore_eos=True)  # fmt: skip
    forked, copies, after = fork_run(model, tok, SHARED_REQUEST, SHARED_PROMPT, params,
                                     BLOCK_SIZE, NUM_BLOCKS)  # fmt: skip
    columns = ["sample", "tokens so far", "K/V stored", "block table"]
    return [
        Step(
            f"Parallel sampling: one request asks for n = {N_SAMPLES} samples of "
            f"{SHARED_PROMPT!r} ({len(SHARED_PROMPT)} tokens, block_size {BLOCK_SIZE}). The "
            "prompt is prefilled once; when the first tokens are sampled the sequence forks "
            "into n samples whose block tables point at the same physical blocks. Each "
            "block's reference count says how many tables hold it.",
            values={
                "after step 1 (prefill, fork)": Table(
                    columns, sample_rows(forked, tok, SHARED_REQUEST)
                ),
                "reference counts after step 1": Table(
                    ["block", "ref count", "held by"], ref_rows(forked)
                ),  # fmt: skip
            },
        ),
        Step(
            "Step 2 writes each sample's first token into the last, partly filled block. A "
            "shared block must not be written in place (the others would see the change), so "
            "the block manager copies it first (copy-on-write): a new block for each writer "
            "while the block is still shared; the last holder writes in place. Full blocks "
            "stay shared for the samples' whole life.",
            values={
                "after step 2": Table(columns, sample_rows(after, tok, SHARED_REQUEST)),
                "reference counts after step 2": Table(
                    ["block", "ref count", "held by"], ref_rows(after)
                ),  # fmt: skip
                "copy-on-write copies (source, destination)": Table(
                    ["source", "destination"], copies
                ),
                "blocks held by the tables": sum(len(s.block_table) for s in after.sequences),
                "distinct physical blocks": len(ref_rows(after)),
            },
        ),
    ]


def _shared_prefix(model: DecoderLM, tok: CharTokenizer) -> list[Step]:
    first, second = PREFIX_PROMPTS
    snapshot, stats, after = prefix_run(model, tok, PREFIX_PROMPTS, BLOCK_SIZE, NUM_BLOCKS)
    hashes = [[b, "-" if snapshot.blocks[b].hash is None else f"{snapshot.blocks[b].hash:016x}"]
              for b in snapshot.sequence(first).block_table]  # fmt: skip
    during = [[r, str(list(snapshot.sequence(r).block_table))] for r in PREFIX_PROMPTS]
    return [
        Step(
            f"Shared prefixes: {first!r} runs one step (its full blocks get a hash chained over "
            f"all tokens up to their end), then {second!r} arrives. Its longest run of cached "
            "full blocks is reused: the block table starts with the same physical blocks, "
            "their reference counts rise to 2, and only the rest of the prompt is computed.",
            formula="h_0 = H(root, tokens[0:bs]),  h_i = H(h_{i-1}, tokens[i*bs:(i+1)*bs])",
            values={
                "block tables while both run": Table(["request", "block table"], during),
                "reference counts": Table(["block", "ref count", "held by"], ref_rows(snapshot)),
                f"hashes of {first!r}'s blocks": Table(["block", "hash"], hashes),
                "prompt tokens looked up": stats.prefix_cache_queried_tokens,
                "prompt tokens found in the cache": stats.prefix_cache_hit_tokens,
                "hit rate": stats.prefix_cache_hit_rate,
            },
        ),
        Step(
            "When both finish, blocks with a hash are not freed but kept as cached (reference "
            "count 0): the next request with the same prefix reuses them. They are evicted, "
            "least recently used first, only when the free list is empty.",
            values={
                "blocks cached": after.blocks_cached,
                "blocks free": after.blocks_free,
                "blocks in use": after.blocks_used,
            },  # fmt: skip
        ),
    ]


def _section_sharing(model: DecoderLM, tok: CharTokenizer) -> Section:
    return Section(
        "Memory sharing across requests",
        [*_parallel_sampling(model, tok), *_shared_prefix(model, tok)],
    )


def build(block_size: int = MEASURED_BLOCK_SIZE) -> Lesson:
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_recap(model),
            _section_problem(),
            _section_analogy(),
            _section_how_it_works(model, tok),
            _section_effective(tok, block_size),
            _section_sharing(model, tok),
        ],
    )
