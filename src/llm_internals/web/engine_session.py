"""An in-process paged engine the Engine view steps by hand, and what each step shows.

The explorer's model runs in a real `LLM` (inference/paged/engine.py) with a deliberately small
pool (few blocks of a few tokens), so that block tables grow block by block, equal prompts share
their prefix blocks, finished requests leave cached blocks behind and a crowded pool preempts.
After every step the session reads the engine only through its public views: `pool_snapshot()`
(paged/snapshot.py: ref counts, free and evictable lists, block tables) and `stats()`
(prefix-cache counters, preemptions, KV slots), and turns them into plain data for the page:

    sequences   each unfinished sample: tokens so far, its block table (block id, filled slots)
    pool        each physical block: state (free / in use / cached), ref count, the samples
                that hold it (shared when more than one), whether it is in the prefix cache
    memory      KV bytes: held by tokens, allocated to blocks in use, the whole pool
    events      samples admitted (given blocks), forked (n > 1: a sample split off at the first
                token, sharing the prompt's blocks) or preempted, and requests finished, in
                this step

Requests are greedy (temperature 0) and ignore end-of-text, so a test engine given the same
requests takes the same steps. Everything is bounded (requests, steps, tokens); a step that
fails aborts the requests it ran, which frees their blocks, and reports why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.paged.engine import LLM
from llm_internals.inference.paged.snapshot import PoolSnapshot, SequenceInfo
from llm_internals.inference.params import SamplingParams


@dataclass(frozen=True)
class EngineLimits:
    """Bounds that keep a session small and its page readable."""

    max_requests: int = 12  # requests added over the session's life
    max_steps: int = 400
    max_new_tokens: int = 32  # per request
    max_samples: int = 4  # n, parallel samples per request
    max_prompt_tokens: int = 48
    max_blocks: int = 64
    max_block_size: int = 16


@dataclass(frozen=True)
class EngineSettings:
    """The pool and batch shape of one session (checked against EngineLimits)."""

    block_size: int = 4
    num_blocks: int = 12
    max_num_seqs: int = 4
    max_num_batched_tokens: int = 16


def check_settings(settings: EngineSettings, limits: EngineLimits) -> EngineSettings:
    """Raise an error naming the field when a setting is outside its range."""
    ranges = dict(block_size=(1, limits.max_block_size), num_blocks=(1, limits.max_blocks),
                  max_num_seqs=(1, 8), max_num_batched_tokens=(1, 256))  # fmt: skip
    for name, (low, high) in ranges.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LLMInternalsError(
                f"engine setting {name} must be an integer in [{low}, {high}], got {value!r}",
                hint=f"choose {name} between {low} and {high}",
            )
    return settings


def request_params(max_tokens: int, n: int = 1) -> SamplingParams:
    """Greedy and to a fixed length: the same request always takes the same steps (n > 1:
    parallel samples, forked from the prompt's blocks, identical tokens, separate tables)."""
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, n=n)


def make_engine(model: torch.nn.Module, tokenizer: Any, settings: EngineSettings) -> LLM:
    """The engine a session (or a test reproducing one) runs."""
    return LLM(
        model, tokenizer, block_size=settings.block_size, num_blocks=settings.num_blocks,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens, eos_token_id=None,
    )  # fmt: skip


class EngineSession:
    """One engine, the requests added to it, and what its last step did."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        settings: EngineSettings | None = None,
        limits: EngineLimits | None = None,
    ) -> None:
        self.limits = limits or EngineLimits()
        self.settings = check_settings(settings or EngineSettings(), self.limits)
        self.engine = make_engine(model, tokenizer, self.settings)
        self.tokenizer = tokenizer
        self.steps = 0
        self.requests: dict[str, dict[str, Any]] = {}  # id -> prompt, ids, n, outputs per sample
        self.finished: dict[str, str] = {}  # request id -> finish reason ("failed" included)
        self.events: list[dict[str, Any]] = []  # what the last step did
        self.error: str | None = None
        self._holding: set[tuple[str, int]] = set()  # samples holding blocks after the last step
        self._seen: set[tuple[str, int]] = set()  # samples that ever held blocks

    # --- requests and steps --------------------------------------------------------------
    def add_request(self, prompt: str, max_tokens: int, n: int = 1) -> str:
        """Queue a greedy request of n samples; its id is r1, r2, ... An error changes
        nothing."""
        if len(self.requests) >= self.limits.max_requests:
            raise LLMInternalsError(
                f"this engine session already has {len(self.requests)} requests (the limit is "
                f"{self.limits.max_requests})",
                hint="press Reset to start a new session",
            )
        _check_count("max_tokens", max_tokens, self.limits.max_new_tokens, "new tokens")
        _check_count("n", n, self.limits.max_samples, "samples")
        if not isinstance(prompt, str) or not prompt:
            raise LLMInternalsError("prompt is empty", hint="type a prompt for the request")
        ids = list(self.tokenizer.encode(prompt[: 8 * self.limits.max_prompt_tokens + 1]))
        if not ids or len(ids) > self.limits.max_prompt_tokens:
            raise LLMInternalsError(
                f"prompt has {len(ids)} or more tokens; an engine request takes 1 to "
                f"{self.limits.max_prompt_tokens}",
                hint=f"shorten the prompt to at most {self.limits.max_prompt_tokens} tokens",
            )
        request_id = f"r{len(self.requests) + 1}"
        self.engine.add_request(request_id, ids, request_params(max_tokens, n))
        self.requests[request_id] = dict(id=request_id, prompt=prompt, prompt_ids=ids,
                                         max_tokens=max_tokens, n=n, outputs=[[]] * n,
                                         added_at_step=self.steps)  # fmt: skip
        return request_id

    def step(self) -> None:
        """One engine step; remember what was admitted, preempted and finished."""
        if self.steps >= self.limits.max_steps:
            raise LLMInternalsError(
                f"this engine session has run {self.steps} steps (the limit is "
                f"{self.limits.max_steps})",
                hint="press Reset to start a new session",
            )
        if not self.engine.has_unfinished():
            raise LLMInternalsError("nothing to run: every request has finished",
                                    hint="add a request first")  # fmt: skip
        self.error = None
        try:
            outputs = self.engine.step()
        except Exception as err:  # the engine's state is unknown: free every request's blocks
            self._abort_unfinished(f"step {self.steps + 1} failed: {type(err).__name__}: {err}")
            raise LLMInternalsError(
                f"engine step {self.steps + 1} failed ({type(err).__name__}: {err}); its "
                "requests were aborted and their blocks freed",
                hint="press Reset to start a new session",
            ) from err
        self.steps += 1
        self.events = []
        for output in outputs:
            self.requests[output.request_id]["outputs"][output.index] = list(output.token_ids)
            if output.request_finished and output.request_id not in self.finished:
                self.finished[output.request_id] = output.finish_reason
                self.events.append(dict(kind="finished", request=output.request_id,
                                        reason=output.finish_reason))  # fmt: skip
        snapshot = self.engine.pool_snapshot()
        holding = {(s.request_id, s.index) for s in snapshot.sequences if s.block_table}
        unfinished = {(s.request_id, s.index) for s in snapshot.sequences}
        for request_id, index in sorted(holding - self._holding):
            kind = "forked" if index and (request_id, index) not in self._seen else "admitted"
            self.events.append(dict(kind=kind, request=request_id, index=index))
        self._seen |= holding
        for request_id, index in sorted((self._holding - holding) & unfinished):
            self.events.append(dict(kind="preempted", request=request_id, index=index))
        self._holding = holding

    def _abort_unfinished(self, why: str) -> None:
        for request_id in self.requests:
            if request_id not in self.finished:
                self.engine.abort(request_id)  # frees the request's blocks
                self.finished[request_id] = "failed"
        self._holding = set()
        self.error = why

    def status(self, request_id: str) -> str:
        """waiting (queued or preempted), running (holds blocks) or its finish reason."""
        if request_id in self.finished:
            return "finished" if self.finished[request_id] != "failed" else "failed"
        return "running" if any(key[0] == request_id for key in self._holding) else "waiting"

    # --- what the page shows -------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """The whole state after the last step, as plain data (see the module docstring)."""
        snapshot = self.engine.pool_snapshot()
        stats = self.engine.stats()
        cache = self.engine.cache
        bytes_per_block = cache.nbytes() // cache.num_blocks
        bytes_per_slot = bytes_per_block // snapshot.block_size
        requests = [
            r | dict(status=self.status(r["id"]), finish_reason=self.finished.get(r["id"]),
                     texts=[self.tokenizer.decode(ids) for ids in r["outputs"]])
            for r in self.requests.values()
        ]  # fmt: skip
        return dict(
            steps=self.steps,
            settings=asdict(self.settings),
            limits=asdict(self.limits),
            requests=requests,
            sequences=[sequence_view(s, snapshot.block_size) for s in snapshot.sequences],
            pool=pool_view(snapshot),
            memory=dict(
                bytes_per_block=bytes_per_block,
                used_bytes=stats.kv_slots_used * bytes_per_slot,
                allocated_bytes=stats.kv_slots_allocated * bytes_per_slot,
                pool_bytes=cache.nbytes(),
            ),
            counters=dict(
                prefix_hit_tokens=stats.prefix_cache_hit_tokens,
                prefix_queried_tokens=stats.prefix_cache_queried_tokens,
                prefix_hit_rate=stats.prefix_cache_hit_rate,
                evictions=stats.prefix_cache_evictions,
                preemptions=stats.preemptions,
                running=stats.num_running,
                waiting=stats.num_waiting,
                finished=len(self.finished),
                blocks_used=stats.blocks_used,
                blocks_free=stats.blocks_free,
                blocks_cached=stats.blocks_cached,
            ),
            events=self.events,
            error=self.error,
            has_unfinished=self.engine.has_unfinished(),
        )


def _check_count(name: str, value: Any, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise LLMInternalsError(
            f"{name} must be an integer in [1, {high}], got {value!r}",
            hint=f"ask for 1 to {high} {what}",
        )


def sequence_view(seq: SequenceInfo, block_size: int) -> dict[str, Any]:
    """One unfinished sample: its block table and how many slots of each block are filled."""
    return dict(
        request=seq.request_id,
        index=seq.index,
        num_tokens=len(seq.token_ids),
        num_computed_tokens=seq.num_computed_tokens,
        block_table=list(seq.block_table),
        filled=[len(seq.block_tokens(i, block_size)) for i in range(len(seq.block_table))],
    )


def pool_view(snapshot: PoolSnapshot) -> list[dict[str, Any]]:
    """Each physical block: id, state, ref count, holders ("r1#0"), cached (in the prefix
    cache: has a hash), shared (more than one holder)."""
    cached = set(snapshot.cached_block_ids.values())
    return [
        dict(
            id=block.block_id,
            state=block.state,
            ref_count=block.ref_count,
            holders=[f"{s.request_id}#{s.index}" for s in snapshot.holders(block.block_id)],
            cached=block.block_id in cached,
            shared=block.ref_count > 1,
        )
        for block in snapshot.blocks
    ]
