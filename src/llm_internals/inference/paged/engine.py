"""The serving engine: requests in, tokens out, one scheduler step at a time.

    add_request ──> Scheduler ──> BlockManager ──> ModelRunner ──> Sampler ──> RequestOutput
                    (who runs)    (which blocks)   (packed forward)  (next token)

`LLM.step()` schedules one batch (continuous batching), runs it as one packed forward over the
paged KV pool, samples the next token of every sequence whose prompt is fully fed, applies the
stop rules and returns what changed. `LLM.generate()` is the offline loop around it; a server
calls `add_request` / `step` / `abort` itself.

Parallel sampling (n > 1): the prompt is prefilled once; when its first token is sampled the
sequence forks into n samples sharing its blocks (the shared last block is copied on write).
A request is finished when all its samples are.

Speculative decoding (speculative_model= or speculative_ngram=; paged/speculation.py): a
decoding sequence also feeds up to gamma draft tokens, the same forward scores them, and the
verification keeps a prefix plus one token; rejected slots are freed before anything is cached.

No request stops the engine: a sample whose logits cannot be sampled (NaN or infinite values,
SamplingRowError) finishes with reason "error" (RequestOutput.error says why) and its blocks are
freed; the other samples of the step take their tokens and go on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence as SequenceOf
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from llm_internals.adapters.multi import check_adapter
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generation_request import eos_ids, split_prompts
from llm_internals.inference.paged.block_manager import BlockManager
from llm_internals.inference.paged.model_runner import ModelRunner
from llm_internals.inference.paged.outputs import EngineStats, RequestOutput, collect_stats
from llm_internals.inference.paged.paged_cache import GIB, PagedKVCache, bytes_per_block
from llm_internals.inference.paged.scheduler import Scheduler
from llm_internals.inference.paged.sequence import Sequence
from llm_internals.inference.paged.snapshot import PoolSnapshot
from llm_internals.inference.paged.speculation import build_speculation
from llm_internals.inference.paged.validation import check_request, positive_int
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import SamplingRowError

DEFAULT_KV_CACHE_GB = 1.0


class LLM:
    """A paged-KV serving engine for a decoder LM.

    model: a checkpoint directory (ours or HF; loaded with its tokenizer.json on the fast path)
    or a built model, with `tokenizer` (optional: without one, prompts and outputs are ids).
    A directory is loaded onto `device` in `dtype` (default: CPU, float32); a built model runs
    where its weights are, and the pool is made there, in their dtype.
    The pool holds num_blocks blocks of block_size tokens, or as many as kv_cache_gb GiB hold;
    by default enough for max_num_seqs full contexts, at most 1 GiB.
    eos_token_id: "auto" (the checkpoint's or the tokenizer's end-of-text id), None, an id or ids.
    Speculative decoding (paged/speculation.py): speculative_model (a folder or a built model
    sharing the vocabulary) or speculative_ngram=True, num_speculative_tokens draft tokens per
    step (default 4), adaptive_gamma: per-sequence gamma from its acceptance rate.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any | None = None,
        *,
        block_size: int = 16,
        num_blocks: int | None = None,
        kv_cache_gb: float | None = None,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int = 1024,
        enable_prefix_caching: bool = True,
        eos_token_id: Any = "auto",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        speculative_model: Any | None = None,
        speculative_ngram: bool = False,
        num_speculative_tokens: int | None = None,
        adaptive_gamma: bool = False,
    ) -> None:
        config_eos: Any = "auto"
        if isinstance(model, (str, Path)):
            from llm_internals.inference.decode_layout import use_decode_layout
            from llm_internals.models.loading import load_model_and_tokenizer

            model, loaded_tokenizer, config_eos = load_model_and_tokenizer(
                Path(model), None, device=device, dtype=dtype
            )
            if next(model.parameters()).device.type == "cpu":  # a CPU BLAS layout choice
                model = use_decode_layout(model)
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
        if not hasattr(model, "hidden_states") or not hasattr(model, "config"):
            raise LLMInternalsError(
                f"the engine serves decoder language models (DecoderLM), got {type(model).__name__}"
            )
        positive_int("block_size", block_size)
        positive_int("max_num_seqs", max_num_seqs)
        positive_int("max_num_batched_tokens", max_num_batched_tokens)
        if max_num_batched_tokens < max_num_seqs:
            raise LLMInternalsError(
                f"max_num_batched_tokens={max_num_batched_tokens} is below max_num_seqs="
                f"{max_num_seqs}: every running sequence needs a token per step",
                hint="raise max_num_batched_tokens or lower max_num_seqs",
            )
        if num_blocks is not None and kv_cache_gb is not None:
            raise LLMInternalsError("give num_blocks or kv_cache_gb, not both")
        if num_blocks is not None:
            positive_int("num_blocks", num_blocks)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_seq_len = self.config.max_seq_len
        if num_blocks is None and kv_cache_gb is None:
            num_blocks = self._default_num_blocks(block_size, max_num_seqs)
        self.cache = PagedKVCache.for_model(model, block_size, num_blocks, kv_cache_gb)
        # with several LoRA adapters equal tokens need not give equal K/V: no prefix sharing
        enable_prefix_caching = enable_prefix_caching and not hasattr(model, "multi_lora")
        self.block_manager = BlockManager(self.cache.num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_num_batched_tokens)
        self.runner = ModelRunner(model, self.cache)
        self.speculation = build_speculation(
            model, tokenizer, speculative_model=speculative_model,
            speculative_ngram=speculative_ngram, num_speculative_tokens=num_speculative_tokens,
            adaptive_gamma=adaptive_gamma,
            block_size=block_size, num_blocks=self.cache.num_blocks, max_num_seqs=max_num_seqs,
        )  # fmt: skip
        self.eos_ids = eos_ids(config_eos if eos_token_id == "auto" else eos_token_id,
                               tokenizer, model)  # fmt: skip
        self.requests: dict[str, list[Sequence]] = {}  # unfinished requests -> their samples
        self._arrivals = itertools.count()
        self._aborted_outputs: list[RequestOutput] = []
        self._counts = dict(added=0, finished=0, aborted=0, steps=0, generated=0)

    def _default_num_blocks(self, block_size: int, max_num_seqs: int) -> int:
        weight = next(self.model.parameters())
        per_block = bytes_per_block(self.config, block_size, weight.dtype)
        per_context = -(-self.max_seq_len // block_size)
        return max(
            per_context,
            min(max_num_seqs * per_context, int(DEFAULT_KV_CACHE_GB * GIB // per_block)),
        )

    # --- requests -------------------------------------------------------------------------
    def add_request(
        self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None
    ) -> None:
        """Queue a request. Raises LLMInternalsError, changing nothing, when it is invalid or
        could never fit (prompt beyond the context, or more blocks than the whole pool)."""
        params = SamplingParams() if params is None else params
        ids = self._check_request(request_id, prompt, params)
        self._add(request_id, ids, params)

    def _add(self, request_id: str, ids: list[int], params: SamplingParams) -> None:
        seq = Sequence(request_id, ids, params, arrival_order=next(self._arrivals),
                       tokenizer=self.tokenizer, eos_ids=self.eos_ids,
                       max_seq_len=self.max_seq_len)  # fmt: skip
        self.requests[request_id] = [seq]
        self.scheduler.add(seq)
        self._counts["added"] += 1

    def _check_request(self, request_id: Any, prompt: Any, params: Any) -> list[int]:
        if isinstance(request_id, str) and request_id in self.requests:
            raise LLMInternalsError(f"request {request_id!r} is already running")
        check_adapter(self.model, getattr(params, "adapter", None))
        return check_request(
            request_id,
            prompt,
            params,
            tokenizer=self.tokenizer,
            vocab_size=self.config.vocab_size,
            max_seq_len=self.max_seq_len,
            block_manager=self.block_manager,
            max_num_seqs=self.scheduler.max_num_seqs,
            speculative=self.speculation is not None,
        )

    def abort(self, request_id: str) -> None:
        """Stop a request and free its blocks; its samples are reported by the next step() as
        finished with reason "abort". An unknown or finished request id is ignored."""
        seqs = self.requests.pop(request_id, None)
        if seqs is None:
            return
        self._counts["aborted"] += 1
        for seq in seqs:
            if seq.is_finished:
                continue
            self._finish(seq)
            seq.finish_reason = "abort"
            seq.metrics.finished_time = time.perf_counter()
            self._aborted_outputs.append(self._output(seq, [], "", request_finished=True))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- stepping -------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; return an output for every sample that advanced (and for
        samples aborted since the last step)."""
        outputs, self._aborted_outputs = self._aborted_outputs, []
        if self.speculation is not None:
            self.speculation.plan(self.scheduler.running)
        batch = self.scheduler.schedule()
        if self.speculation is not None:
            self.speculation.propose(batch)
        if not batch:
            return outputs
        self._counts["steps"] += 1
        started = time.perf_counter()
        row_seqs, logits = self.runner.execute(batch)
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            if not seq.draft_token_ids:  # a speculating one registers after verification
                self.block_manager.register_full_blocks(seq)
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = started
        results = self._next_tokens(row_seqs, logits)
        now = time.perf_counter()
        finished_requests = set()
        step_outputs = []
        for seq, tokens in results:
            before, new_text = seq.num_tokens, ""
            if isinstance(tokens, str):
                seq.fail(tokens)
            for token in () if isinstance(tokens, str) else tokens:
                self._counts["generated"] += 1
                new_text += seq.append_token(token, now)
                if seq.finish_reason is not None:
                    break
            new_ids = seq.token_ids[before:]
            if seq.finish_reason is not None:
                seq.metrics.finished_time = now
                self._finish(seq)
                if all(s.is_finished for s in self.requests[seq.request_id]):
                    finished_requests.add(seq.request_id)
            elif seq.draft_token_ids:
                self.speculation.commit(seq, self.block_manager)
            step_outputs.append((seq, new_ids, new_text))
        for seq, new_ids, new_text in step_outputs:
            done = seq.request_id in finished_requests
            outputs.append(self._output(seq, new_ids, new_text, request_finished=done))
        for request_id in finished_requests:
            del self.requests[request_id]
            self._counts["finished"] += 1
        return outputs

    def _next_tokens(
        self, row_seqs: list[Sequence], logits: torch.Tensor
    ) -> list[tuple[Sequence, list[int] | str]]:
        """The tokens each sample takes this step (one; several for a speculating sequence),
        or why its logits could not be sampled."""
        plain = [row for row, seq in enumerate(row_seqs) if not seq.draft_token_ids]
        seqs, rows = self._fork([row_seqs[row] for row in plain])
        results: list[tuple[Sequence, list[int] | str]] = []
        if seqs:
            failed: dict[int, str] = {}
            try:
                tokens = self.runner.sample(seqs, logits[[plain[r] for r in rows]])
            except SamplingRowError as err:  # those samples fail; the others keep their tokens
                tokens, failed = err.tokens.tolist(), err.rows
            for row, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
                failure = f"logits {failed[row]}: nothing to sample" if row in failed else None
                results.append((seq, failure or [token]))
        if len(plain) < len(row_seqs):
            results += self.speculation.verify(row_seqs, logits)
        return results

    def _finish(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        if self.speculation is not None:
            self.speculation.release(seq)

    def _fork(self, sampling: list[Sequence]) -> tuple[list[Sequence], list[int]]:
        """Split sequences at their first sample into n samples; (samples, logits row each)."""
        seqs, rows = [], []
        for row, seq in enumerate(sampling):
            seqs.append(seq)
            rows.append(row)
            for index in range(1, seq.pending_forks + 1):
                child = seq.fork(index)
                self.block_manager.fork(seq, child)
                self.scheduler.add_running(child)
                self.requests[seq.request_id].append(child)
                seqs.append(child)
                rows.append(row)
            seq.pending_forks = 0
        return seqs, rows

    def _output(
        self, seq: Sequence, new_ids: list[int], new_text: str, request_finished: bool
    ) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            prompt_token_ids=seq.prompt_token_ids,
            token_ids=list(seq.output_token_ids),
            new_token_ids=list(new_ids),
            text=seq.text,
            new_text=new_text,
            finished=seq.finish_reason is not None,
            finish_reason=seq.finish_reason,
            error=seq.error,
            metrics=seq.metrics,
            index=seq.index,
            request_finished=request_finished,
        )

    # --- offline use ----------------------------------------------------------------------
    def generate(
        self,
        prompts: str | list[int] | SequenceOf[str | list[int]],
        params: SamplingParams | SequenceOf[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run prompts to completion; the final output of each sample, in prompt order (and
        sample order within a prompt). Every prompt is checked before any is queued."""
        items, _ = split_prompts(prompts)
        params = SamplingParams() if params is None else params
        params_list = [params] * len(items) if isinstance(params, SamplingParams) else list(params)
        if len(params_list) != len(items):
            raise LLMInternalsError(
                f"params must be one SamplingParams or one per prompt ({len(items)}), got "
                f"{len(params_list)}"
            )
        batch_id = next(self._arrivals)
        request_ids = [f"generate-{batch_id}-{i}" for i in range(len(items))]
        checked = [self._check_request(r, p, sp)
                   for r, p, sp in zip(request_ids, items, params_list, strict=True)]  # fmt: skip
        for request_id, ids, sp in zip(request_ids, checked, params_list, strict=True):
            self._add(request_id, ids, sp)
        final: dict[tuple[str, int], RequestOutput] = {}
        wanted = set(request_ids)
        while any(r in self.requests for r in wanted):
            for output in self.step():
                if output.request_id in wanted and output.finished:
                    final[(output.request_id, output.index)] = output
        return [
            final[(r, i)]
            for r, sp in zip(request_ids, params_list, strict=True)
            for i in range(sp.n)
        ]

    # --- introspection --------------------------------------------------------------------
    def block_tables(self) -> dict[tuple[str, int], list[int]]:
        """(request_id, sample index) -> physical block ids, for every unfinished sample."""
        return {
            (s.request_id, s.index): list(s.block_table)
            for seqs in self.requests.values()
            for s in seqs
            if not s.is_finished
        }

    def pool_snapshot(self, kv_block_ids: SequenceOf[int] = ()) -> PoolSnapshot:
        """A frozen copy of the KV pool's bookkeeping (ref counts, free list, cached hashes, the
        block tables and tokens of every unfinished sample) and the K/V of kv_block_ids, laid
        out in that order (paged/snapshot.py). Later steps do not change it."""
        live = [s for seqs in self.requests.values() for s in seqs if not s.is_finished]
        snapshot = self.block_manager.snapshot(live)
        if not kv_block_ids:
            return snapshot
        keys, values = self.cache.read_blocks(kv_block_ids)
        return replace(snapshot, kv_block_ids=tuple(kv_block_ids), keys=keys, values=values)

    def stats(self) -> EngineStats:
        """The pool, the prefix cache, the queues, the counters and speculation's acceptance."""
        return collect_stats(self)
