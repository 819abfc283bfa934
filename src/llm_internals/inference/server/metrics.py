"""/metrics: the engine's statistics in the Prometheus text format (or JSON).

Prometheus text exposition, version 0.0.4: for each metric a `# HELP` line, a `# TYPE` line
(gauge: a value that goes up and down; counter: a running total) and `name value`. All names
start with `llm_internals_`. `/metrics?format=json` returns the same numbers as one JSON object
keyed by the names without the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "llm_internals_"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "gauge" or "counter"
    help: str
    value: float


def engine_metrics(stats: Any) -> list[Metric]:
    """The metrics of an EngineStats snapshot."""
    return [
        Metric("blocks_total", "gauge", "KV blocks in the pool", stats.num_blocks),
        Metric("block_size", "gauge", "tokens per KV block", stats.block_size),
        Metric("blocks_used", "gauge", "KV blocks referenced by sequences", stats.blocks_used),
        Metric("blocks_free", "gauge", "KV blocks on the free list", stats.blocks_free),
        Metric(
            "blocks_cached",
            "gauge",
            "unreferenced KV blocks kept for the prefix cache (evictable)",
            stats.blocks_cached,
        ),  # fmt: skip
        Metric(
            "prefix_cache_queried_tokens_total",
            "counter",
            "prompt tokens looked up in the prefix cache",
            stats.prefix_cache_queried_tokens,
        ),  # fmt: skip
        Metric(
            "prefix_cache_hit_tokens_total",
            "counter",
            "prompt tokens found in the prefix cache",
            stats.prefix_cache_hit_tokens,
        ),
        Metric(
            "prefix_cache_hit_rate",
            "gauge",
            "hit tokens / queried tokens, since start",
            stats.prefix_cache_hit_rate,
        ),  # fmt: skip
        Metric(
            "prefix_cache_evictions_total",
            "counter",
            "cached blocks evicted (LRU)",
            stats.prefix_cache_evictions,
        ),  # fmt: skip
        Metric(
            "preemptions_total",
            "counter",
            "sequences preempted for lack of blocks",
            stats.preemptions,
        ),  # fmt: skip
        Metric(
            "kv_slots_used",
            "gauge",
            "KV slots of running sequences holding a token",
            stats.kv_slots_used,
        ),  # fmt: skip
        Metric(
            "kv_slots_allocated",
            "gauge",
            "KV slots in blocks held by running sequences",
            stats.kv_slots_allocated,
        ),  # fmt: skip
        Metric(
            "kv_waste_ratio", "gauge", "1 - kv_slots_used / kv_slots_allocated", stats.kv_waste
        ),  # fmt: skip
        Metric("kv_cache_bytes", "gauge", "bytes of the K/V pool", stats.kv_cache_bytes),
        Metric("requests_running", "gauge", "sequences in the running batch", stats.num_running),
        Metric(
            "requests_waiting", "gauge", "sequences waiting to be scheduled", stats.num_waiting
        ),  # fmt: skip
        Metric(
            "requests_added_total", "counter", "engine requests added", stats.num_requests_added
        ),  # fmt: skip
        Metric(
            "requests_finished_total",
            "counter",
            "engine requests finished",
            stats.num_requests_finished,
        ),  # fmt: skip
        Metric(
            "requests_aborted_total",
            "counter",
            "engine requests aborted",
            stats.num_requests_aborted,
        ),  # fmt: skip
        Metric("engine_steps_total", "counter", "engine steps run", stats.num_steps),
        Metric("generated_tokens_total", "counter", "tokens sampled", stats.generated_tokens),
    ] + speculative_metrics(getattr(stats, "speculative", None))


def speculative_metrics(spec: Any) -> list[Metric]:
    """Speculative decoding's counters (SpeculativeStats), when the engine speculates: per
    sequence-round (one sequence in one target forward) and per draft position i = 1..gamma."""
    if spec is None:
        return []
    metrics = [
        Metric("spec_decode_num_speculative_tokens", "gauge",
               f"draft tokens per round at most (gamma; method {spec.method}"
               f"{', adaptive' if spec.adaptive else ''})", spec.gamma),
        Metric("spec_decode_draft_tokens_total", "counter", "draft tokens proposed and verified",
               spec.proposed),
        Metric("spec_decode_accepted_tokens_total", "counter",
               "draft tokens the target accepted", spec.accepted),
        Metric("spec_decode_rounds_total", "counter",
               "sequence-rounds: one sequence verified in one target forward", spec.rounds),
        Metric("spec_decode_target_forwards_total", "counter",
               "engine steps (batched target forwards) that verified drafts",
               spec.target_forwards),
        Metric("spec_decode_emitted_tokens_total", "counter",
               "tokens the rounds produced (accepted drafts + 1 each)", spec.tokens_emitted),
        Metric("spec_decode_acceptance_rate", "gauge", "accepted / proposed draft tokens",
               spec.acceptance_rate),
        Metric("spec_decode_alpha", "gauge",
               "accepted / examined draft tokens (per-token acceptance probability)", spec.alpha),
        Metric("spec_decode_tokens_per_round", "gauge",
               "tokens per sequence-round (1 = no gain)", spec.tokens_per_target_forward),
    ]  # fmt: skip
    for i, (proposed, accepted) in enumerate(
        zip(spec.per_position_proposed, spec.per_position_accepted, strict=True), start=1
    ):
        metrics += [
            Metric(f"spec_decode_position_{i}_draft_tokens_total", "counter",
                   f"draft tokens verified at draft position {i}", proposed),
            Metric(f"spec_decode_position_{i}_accepted_tokens_total", "counter",
                   f"draft tokens accepted at draft position {i}", accepted),
        ]  # fmt: skip
    return metrics


def server_metrics(in_flight: int, accepted: int, rejected: int, disconnects: int,
                   aborted: int, failures: int) -> list[Metric]:  # fmt: skip
    """The HTTP side. Exact under any timing: `disconnect_aborts` counts, on the engine thread,
    only the engine requests an early-closed response really aborted (a request that finished
    while its client was leaving is not counted), so it equals the engine's
    requests_aborted_total and is at most one per prompt of each disconnect. Both restart
    from 0 with a fresh engine (as after a process restart)."""
    return [
        Metric(
            "http_requests_in_flight", "gauge", "prompts being served (the 429 limit)", in_flight
        ),  # fmt: skip
        Metric(
            "http_requests_accepted_total", "counter", "generation requests accepted", accepted
        ),  # fmt: skip
        Metric(
            "http_requests_rejected_total",
            "counter",
            "generation requests refused with 429 (too many at once)",
            rejected,
        ),
        Metric(
            "http_client_disconnects_total",
            "counter",
            "accepted requests whose client left before the response was complete (streaming: "
            "before [DONE] was written; otherwise: before every sample finished)",
            disconnects,
        ),
        Metric(
            "http_disconnect_aborts_total",
            "counter",
            "engine requests (one per prompt) aborted because their client left before they "
            "finished",
            aborted,
        ),
        Metric(
            "engine_failures_total",
            "counter",
            "engine failures; each ends the requests in flight and builds a fresh engine",
            failures,
        ),
    ]


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def prometheus_text(metrics: list[Metric]) -> str:
    lines = []
    for m in metrics:
        name = PREFIX + m.name
        lines += [
            f"# HELP {name} {m.help}",
            f"# TYPE {name} {m.kind}",
            f"{name} {_number(m.value)}",
        ]
    return "\n".join(lines) + "\n"


def as_json(metrics: list[Metric]) -> dict[str, float]:
    return {m.name: m.value for m in metrics}


def parse_prometheus_text(text: str) -> dict[str, float]:
    """name (without the prefix) -> value, from prometheus_text output (for clients and tests)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.removeprefix(PREFIX)] = float(value)
    return values
