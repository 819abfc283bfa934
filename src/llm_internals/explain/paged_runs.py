"""The small engine runs of the `paged-attention` lesson, through the real engine's public API
(`inference.paged.LLM`): a packed decode step with its block tables, a request forking into
parallel samples with copy-on-write, and two requests sharing a cached prompt prefix.
"""

from __future__ import annotations

from llm_internals.inference.paged import LLM
from llm_internals.inference.paged.outputs import EngineStats
from llm_internals.inference.paged.snapshot import PoolSnapshot
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.trace import recording


def decode_step_run(
    model: DecoderLM,
    tok: CharTokenizer,
    requests: tuple[tuple[str, int], ...],
    block_size: int,
    num_blocks: int,
) -> tuple[list[list], PoolSnapshot, dict]:
    """Greedy requests (prompt, max_tokens): step 1 prefills every prompt, step 2 decodes one
    token per sequence under a recorder. Returns step 2's packed rows (request, token,
    position, slot), the pool snapshot with the K/V of the first request's blocks, and step
    2's outputs by request id."""
    llm = LLM(model, tok, block_size=block_size, num_blocks=num_blocks,
              enable_prefix_caching=False)  # fmt: skip
    for prompt, max_tokens in requests:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        llm.add_request(prompt, prompt, params)
    llm.step()  # prefill every prompt, sample each first token
    with recording() as rec:
        outputs = {o.request_id: o for o in llm.step()}  # one decode token per sequence
    ids, positions = rec.get("paged.input_ids"), rec.get("paged.positions")
    slots, owners = rec.get("paged.slot_mapping"), rec.get("paged.row_sequences")
    packed = [[owners[row][0], repr(tok.decode([int(ids[row])])), int(positions[row]),
               int(slots[row])] for row in rec.get("paged.sample_rows")]  # fmt: skip
    first = requests[0][0]
    snapshot = llm.pool_snapshot(kv_block_ids=llm.block_tables()[(first, 0)])
    return packed, snapshot, outputs


def fork_run(
    model: DecoderLM,
    tok: CharTokenizer,
    request: str,
    prompt: str,
    params: SamplingParams,
    block_size: int,
    num_blocks: int,
) -> tuple[PoolSnapshot, list[list], PoolSnapshot]:
    """One request with params.n samples: the pool after step 1 (prefill and fork), the
    copy-on-write copies (source, destination) step 2 recorded, and the pool after step 2."""
    llm = LLM(model, tok, block_size=block_size, num_blocks=num_blocks,
              enable_prefix_caching=False)  # fmt: skip
    llm.add_request(request, prompt, params)
    llm.step()
    forked = llm.pool_snapshot()
    with recording() as rec:
        llm.step()
    copies = [list(pair) for pairs in rec.all("paged.block_copies") for pair in pairs]
    return forked, copies, llm.pool_snapshot()


def prefix_run(
    model: DecoderLM,
    tok: CharTokenizer,
    prompts: tuple[str, str],
    block_size: int,
    num_blocks: int,
) -> tuple[PoolSnapshot, EngineStats, EngineStats]:
    """With prefix caching: the first prompt runs one step, then the second arrives and runs one.
    Returns the pool snapshot and the stats at that point, and the stats once both finish."""
    llm = LLM(model, tok, block_size=block_size, num_blocks=num_blocks,
              enable_prefix_caching=True)  # fmt: skip
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    first, second = prompts
    llm.add_request(first, first, params)
    llm.step()
    llm.add_request(second, second, params)
    llm.step()
    snapshot = llm.pool_snapshot()
    stats = llm.stats()
    while llm.has_unfinished():
        llm.step()
    return snapshot, stats, llm.stats()
