"""Lesson "speculative-decoding": a cheap draft guesses, the target checks all guesses at once.

Every number comes from the real code: a tiny random character-level GPT (explain/tiny_models.py)
and its first layer as the draft, `generate`
with `draft_model=` (inference/speculative/) run under a recorder (the draft tokens, p(x), q(x),
uniforms and accept decisions that `rejection.verify` recorded), the full p and q of that round
from forwards of both models, timed forwards of a larger random model (why decoding is slow),
and the table of benchmarks/speculative.py when its results file exists (else a small live
measurement on the lesson's models; the lesson says which).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from llm_internals.data import corpus_home
from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import GPT2_STYLE, tiny_decoder, tiny_tokenizer
from llm_internals.inference.generate import generate
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.speculative.stats import SpeculativeStats
from llm_internals.models import DecoderLM
from llm_internals.tokenizer.char import CharTokenizer
from llm_internals.trace import recording

INFO = LessonInfo(
    name="speculative-decoding",
    title="Speculative decoding: several tokens per target forward, same distribution",
    summary="Why decoding is bound by weight reads, one real draft/verify round with its p, q "
    "and uniforms, why rejection sampling keeps the output exactly the target's, and the "
    "measured speedup and where it stops paying.",
)

PROMPT = "to be, or not to be, that is the "
GAMMA = 4
NEW_TOKENS = 48
SEED = 0
ROUND_SEED = 19  # the search for a round with both an acceptance and a rejection starts here
TEMPERATURE = 0.1  # applied to p and q alike; sharpens the random models' flat logits
SHAPE = {**GPT2_STYLE, "d_model": 32, "n_heads": 4, "max_seq_len": 128, "attn_impl": "sdpa"}
TIMING_SHAPE = dict(vocab_size=2048, d_model=384, n_layers=4, n_heads=6, max_seq_len=128)
TIMED_CONTEXT = 32
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
GAMMAS = (1, 2, 3, 4, 6, 8)


def results_path() -> Path:
    """Where benchmarks/speculative.py writes its table (its default --cache-dir)."""
    return corpus_home() / "speculative" / "results.json"


def expected_tokens(alpha: float, gamma: float) -> float:
    """E = (1 - alpha^(gamma+1)) / (1 - alpha) tokens per target forward (Leviathan et al.)."""
    return gamma + 1.0 if alpha >= 1.0 else (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def speedup(alpha: float, gamma: float, c: float) -> float:
    """Walltime factor E / (gamma c + 1): gamma draft steps of relative cost c per round."""
    return expected_tokens(alpha, gamma) / (gamma * c + 1.0)


def lesson_models() -> tuple[DecoderLM, DecoderLM, CharTokenizer]:
    """The target: a random GPT-2-style character model (explain/tiny_models.py), 2 layers of
    width 32. The draft: the same model cut after its first layer (its embeddings, block 0,
    final norm and head, loaded from the target's weights): half the layers, so half the
    weight reads, and correlated with the target, as self-speculative (layer-skipping) drafts
    are. Random weights: the text is noise, the mechanics are the point."""
    with torch.random.fork_rng():
        target = tiny_decoder(SEED, **SHAPE, n_layers=2)
        draft = tiny_decoder(SEED, **SHAPE, n_layers=1)
    draft.load_state_dict(target.state_dict(), strict=False)  # blocks.1 has no place in it
    return target, draft, tiny_tokenizer()


def distributions(model: DecoderLM, ids: list[int], start: int, count: int) -> torch.Tensor:
    """softmax(logits / TEMPERATURE) at positions start .. start+count-1: the next-token
    distributions after the prefixes ids[: start+1], ids[: start+2], ... (float64)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, start : start + count]
    return torch.softmax(logits.double() / TEMPERATURE, dim=-1)


class Round:
    """One sampled draft/verify round of `generate(..., draft_model=...)`: what verify recorded,
    and the full p (target) and q (draft) at each draft position from forwards of both models."""

    def __init__(self, target: DecoderLM, draft: DecoderLM, tok: CharTokenizer) -> None:
        self.prompt = tok.encode(PROMPT)
        for seed in range(
            ROUND_SEED, ROUND_SEED + 50
        ):  # first seed whose round accepts and rejects
            with recording() as rec:
                generate(target, tok, PROMPT, max_new_tokens=GAMMA + 1, draft_model=draft,
                         num_speculative_tokens=GAMMA, temperature=TEMPERATURE,
                         seed=seed)  # fmt: skip
            self.seed = seed
            self.n = int(rec.all("speculative.num_accepted")[0][0])
            if 0 < self.n < GAMMA:
                break
        first = {name: rec.all(f"speculative.{name}")[0][0] for name in
                 ("draft_tokens", "p_x", "q_x", "uniforms", "accepted", "residual",
                  "next_token")}  # fmt: skip
        self.drafts = first["draft_tokens"].tolist()
        self.p_x, self.q_x = first["p_x"].tolist(), first["q_x"].tolist()
        self.uniforms, self.accepted = first["uniforms"].tolist(), first["accepted"].tolist()
        self.residual = first["residual"].double()
        self.next_token = int(first["next_token"])
        ids = self.prompt + self.drafts
        self.p = distributions(target, ids, len(self.prompt) - 1, GAMMA + 1)
        self.q = distributions(draft, ids, len(self.prompt) - 1, GAMMA)
        self.tok = tok

    def char(self, token: int) -> str:
        return repr(self.tok.decode([token]))


def exactness(p: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """At one position: beta = sum min(p, q) (acceptance probability), the residual mass
    sum max(0, p - q) = 1 - beta, and max |P(emit) - p| with
    P(emit x) = q(x) min(1, p(x)/q(x)) + (1 - beta) norm(max(0, p - q))(x)."""
    beta = torch.minimum(p, q).sum()
    residual = (p - q).clamp(min=0)
    emitted = torch.minimum(p, q) + (1 - beta) * residual / residual.sum()
    return {"beta": float(beta), "residual_mass": float(residual.sum()),
            "max_error": float((emitted - p).abs().max())}  # fmt: skip


def weight_bytes(model: DecoderLM) -> int:
    """Bytes of weights one decode step reads: every parameter once, except the learned
    position table (one row per token); a tied embedding is the output head, counted once."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters()
               if "pos" not in name)  # fmt: skip


def timed_forward(model: DecoderLM, new: int, reps: int = 5) -> float:
    """Median seconds of one cached forward over `new` tokens after TIMED_CONTEXT cached ones
    (new = 1: a decode step; new = gamma + 1: a verification)."""
    ids = torch.randint(0, model.config.vocab_size, (1, TIMED_CONTEXT + new),
                        generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    times = []
    with torch.no_grad():
        for _ in range(reps):
            cache = ContiguousKVCache.for_model(model, 1, TIMED_CONTEXT + new)
            model.hidden_states(ids[:, :TIMED_CONTEXT], cache=cache)
            start = time.perf_counter()
            model.lm_head(model.hidden_states(ids[:, TIMED_CONTEXT:], cache=cache))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_results() -> dict[str, Any] | None:
    """The benchmark's results (a full run, not --quick), or None when there are none."""
    path = results_path()
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return None if results.get("quick") else results


def live_measurement(target: DecoderLM, draft: DecoderLM, tok: CharTokenizer) -> dict[str, Any]:
    """Greedy generate, target alone vs draft-model and n-gram speculation (gamma = GAMMA),
    median of 3 interleaved runs: the benchmark's batch-1 rows on the lesson's models."""
    runs = {"target alone": {}, "draft": {"draft_model": draft}, "n-gram": {"ngram": True}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    stats: dict[str, SpeculativeStats] = {}
    for _ in range(3):
        for name, extra in runs.items():
            stats[name] = SpeculativeStats()
            spec = {"num_speculative_tokens": GAMMA, "speculative_stats": stats[name]}
            start = time.perf_counter()
            generate(target, tok, PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                     **(extra and {**extra, **spec}))  # fmt: skip
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["target alone"])
    rows = [{"method": "target alone", "gamma": 0, "tokens_per_s": NEW_TOKENS / base,
             "speedup": 1.0}]  # fmt: skip
    for name in ("draft", "n-gram"):
        seconds = statistics.median(times[name])
        rows.append({"method": name, "gamma": GAMMA, "alpha": stats[name].alpha,
                     "tokens_per_forward": stats[name].tokens_per_target_forward,
                     "tokens_per_s": NEW_TOKENS / seconds, "speedup": base / seconds})  # fmt: skip
    c = timed_forward(draft, 1) / timed_forward(target, 1)
    rows[0]["c"] = c
    return {"batch1": rows, "engine": [], "hf": []}


def _section_problem(target: DecoderLM, tok: CharTokenizer) -> Section:
    plain = generate(target, tok, PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    return Section(
        "What problem it solves",
        [
            Step(
                f"A language model writes one token per forward pass: token t+1 needs token t. "
                f"Generating {NEW_TOKENS} tokens after the prompt takes {NEW_TOKENS} forwards of "
                f"the model, one after the other, however fast each is. Speculative decoding "
                f"(Leviathan et al. 2023; Chen et al. 2023) produces several tokens per forward of "
                f"the big model and still samples exactly from the big model's distribution: same "
                f"quality, fewer sequential forwards.",
                values={
                    "prompt": repr(PROMPT),
                    "tokens generated": len(plain.token_ids),
                    "target forwards (plain decoding)": len(plain.token_ids),
                },  # fmt: skip
            )
        ],
    )


def _section_big_picture(target: DecoderLM, draft: DecoderLM, tok: CharTokenizer) -> Section:
    stats = SpeculativeStats()
    generate(target, tok, PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=None, draft_model=draft,
             num_speculative_tokens=GAMMA, temperature=TEMPERATURE, seed=SEED,
             speculative_stats=stats)  # fmt: skip
    return Section(
        "The big picture",
        [
            Step(
                f"Two models share one tokenizer: the target (the model we want samples from; "
                f"here {target.config.n_layers} layers) and a cheaper draft (here the target's "
                f"first layer only). Each round the draft proposes gamma = {GAMMA} tokens one by "
                f"one; the target scores all gamma + 1 positions in ONE forward; a rejection rule "
                f"keeps a prefix of the drafts and adds one token of its own. The same "
                f"{NEW_TOKENS} tokens (sampled at temperature {TEMPERATURE}) took this many "
                f"target forwards:",
                formula="tokens per target forward = (accepted drafts + 1) per round",
                values={
                    "target forwards (rounds)": stats.rounds,
                    "tokens emitted": stats.tokens_emitted,
                    "tokens per target forward": stats.tokens_per_target_forward,
                    "drafts proposed": stats.proposed,
                    "drafts accepted": stats.accepted,
                    "acceptance rate": stats.acceptance_rate,
                },
            )
        ],
    )


def _section_why_slow(target: DecoderLM) -> Section:
    timing = tiny_decoder(SEED, **{**SHAPE, **TIMING_SHAPE, "fused_ops": True})
    one, verify = timed_forward(timing, 1), timed_forward(timing, GAMMA + 1)
    n_bytes = weight_bytes(timing)
    params = sum(p.numel() for p in timing.parameters())
    return Section(
        "Why generation is slow",
        [
            Step(
                "At batch 1 a decode step multiplies one token's vector by every weight matrix: "
                "each weight is read from memory once and used for one multiply-add (2 FLOPs per "
                "4 bytes in float32). Memory bandwidth, not arithmetic, sets the pace; the same "
                "read could serve several tokens almost for free.",
                formula="bytes per token = sum over weights of numel x bytes per element",
                values={
                    "the lesson's target: weight bytes per token": weight_bytes(target),
                    "a 4 x 384 model (vocab 2048): parameters": params,
                    "its weight bytes per token (no position table)": n_bytes,
                    "FLOPs per byte read (2 per weight / 4 bytes)": 2 * params / (4 * params),
                },
            ),
            Step(
                f"Measured on that 4 x 384 model (random weights, {TIMED_CONTEXT} tokens "
                f"cached): one forward over 1 new token (a decode step) against one forward "
                f"over gamma + 1 = {GAMMA + 1} new tokens (a verification). The second reads "
                f"the same weights once for {GAMMA + 1} tokens.",
                values={
                    "1 token (ms)": 1000 * one,
                    f"{GAMMA + 1} tokens (ms)": 1000 * verify,
                    "time ratio": verify / one,
                    "implied read bandwidth, 1 token (GB/s)": n_bytes / one / 1e9,
                },
            ),
        ],
    )


def _section_core_idea(target: DecoderLM, draft: DecoderLM, tok: CharTokenizer) -> Section:
    plain = generate(target, tok, PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    with recording() as rec:
        spec = generate(target, tok, PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=None,
                        draft_model=draft, num_speculative_tokens=GAMMA)  # fmt: skip
    drafts = rec.all("speculative.draft_tokens")[0][0].tolist()
    n = int(rec.all("speculative.num_accepted")[0][0])
    prompt = tok.encode(PROMPT)
    argmax = distributions(target, prompt + drafts, len(prompt) - 1, GAMMA + 1).argmax(-1)
    rows = [[i + 1, repr(tok.decode([d])), repr(tok.decode([int(argmax[i])])),
             "accept" if i < n else ("reject" if i == n else "-")]
            for i, d in enumerate(drafts)]  # fmt: skip
    return Section(
        "The core idea",
        [
            Step(
                "Guess cheaply, check in parallel. Greedy decoding shows it most simply: the "
                "draft proposes its own greedy tokens; one target forward over prompt + drafts "
                "gives the target's argmax at every draft position at once; drafts are kept "
                "while they equal it, and the first disagreement is replaced by the target's "
                "token. Every kept token is one the target would have chosen itself.",
                formula="keep x_i while x_i == argmax p_i; then emit argmax p_(n+1)",
                values={
                    "first round": Table(
                        ["position", "draft token", "target argmax", "decision"], rows
                    ),  # fmt: skip
                    "accepted in this round": n,
                    "emitted": n + 1,
                },
            ),
            Step(
                f"Over {NEW_TOKENS} tokens the speculative output is token for token the "
                f"target's own greedy output.",
                values={
                    "target alone": repr(plain.text),
                    "speculative": repr(spec.text),
                    "identical": plain.token_ids == spec.token_ids,
                },  # fmt: skip
            ),
        ],
    )


def _section_walkthrough(r: Round) -> Section:
    rows = []
    for i, token in enumerate(r.drafts):
        ratio = r.p_x[i] / r.q_x[i]
        decision = "accept" if r.accepted[i] else ("reject" if i == r.n else "not examined")
        rows.append([i + 1, r.char(token), r.q_x[i], r.p_x[i], min(1.0, ratio), r.uniforms[i],
                     decision])  # fmt: skip
    return Section(
        "One real draft/verify round, step by step",
        [
            Step(
                f"Sampling at temperature {TEMPERATURE} (applied to the target's p and the "
                f"draft's q alike), seed {r.seed}. The draft sampled {GAMMA} tokens x_i from its "
                f"q_i; one target forward gave p_1..p_{GAMMA + 1}. Position i is accepted when "
                f"the uniform r_i < p_i(x_i) / q_i(x_i); the round stops at the first rejection.",
                formula="accept x_i  iff  r_i < min(1, p_i(x_i) / q_i(x_i))",
                values={
                    "round": Table(
                        [
                            "i",
                            "draft x_i",
                            "q_i(x_i)",
                            "p_i(x_i)",
                            "min(1, p/q)",
                            "r_i",
                            "decision",
                        ],
                        rows,
                    ),  # fmt: skip
                    "accepted n": r.n,
                },
            ),
            Step(
                f"Position {r.n + 1} was rejected, so the next token is drawn from the residual "
                f"norm(max(0, p - q)) there, with the round's last uniform: "
                f"{r.char(r.next_token)}. The round emitted {r.n + 1} tokens for one target "
                f"forward. The full distributions behind the table (rows: positions; columns: "
                f"the {r.p.shape[1]} characters):",
                values={
                    "p (target), positions 1..gamma+1": r.p.float(),
                    "q (draft), positions 1..gamma": r.q.float(),
                    "residual drawn from (recorded, unnormalised)": r.residual.float()[None],
                    "next token": r.char(r.next_token),
                },
            ),
        ],
    )


def _section_verification(r: Round) -> Section:
    rows = []
    for i in range(GAMMA):
        check = exactness(r.p[i], r.q[i])
        rows.append([i + 1, check["beta"], check["residual_mass"],
                     check["beta"] + check["residual_mass"], check["max_error"]])  # fmt: skip
    return Section(
        "The verification step: why the output is exactly p",
        [
            Step(
                "At one position the token x comes out either as an accepted draft (drawn from "
                "q, kept with probability min(1, p/q)) or, after a rejection, from the residual. "
                "The first path gives q(x) min(1, p(x)/q(x)) = min(p, q)(x); a rejection happens "
                "with probability 1 - beta, beta = sum min(p, q), which equals sum max(0, p - q), "
                "so the second path gives exactly p - min(p, q). Together: p. Position by "
                "position this yields the target's joint distribution, and the draft only "
                "changes how many tokens a forward yields.",
                formula="P(x) = min(p, q)(x) + (1 - beta) max(0, p - q)(x) / sum max(0, p - q)"
                " = p(x)",
                values={
                    "checked on this round's p and q": Table(
                        [
                            "position",
                            "beta = sum min(p, q)",
                            "sum max(0, p - q)",
                            "sum of both",
                            "max |P - p|",
                        ],
                        rows,
                    ),  # fmt: skip
                },
                decimals=6,
            ),
        ],
    )


def _rows_table(rows: list[dict[str, Any]], engine: bool = False) -> Table:
    """Measured rows as a table; the engine reports accepted / proposed as its rate."""
    rate = "acceptance_rate" if engine else "alpha"
    keys = ["batch"] * engine + ["method", "gamma", rate, "tokens_per_forward", "tokens_per_s",
                                 "speedup"]  # fmt: skip
    cells = [[row.get(k) if row.get(k) is not None else "-" for k in keys] for row in rows]
    names = {"tokens_per_forward": "tokens / target forward", "tokens_per_s": "tokens/s",
             "acceptance_rate": "acceptance rate"}  # fmt: skip
    return Table([names.get(k, k) for k in keys], cells)


def _section_real_numbers(measured: dict[str, Any], source: str) -> Section:
    values: dict[str, Any] = {"batch 1, greedy": _rows_table(measured["batch1"])}
    if measured.get("engine"):
        values["paged engine, greedy"] = _rows_table(measured["engine"], engine=True)
    if measured.get("hf"):
        values["HF transformers, same weights"] = Table(
            ["method", "tokens/s", "speedup over HF greedy"],
            [[r["method"], r["tokens_per_s"], r["speedup"]] for r in measured["hf"]],
        )
    best = max(measured["batch1"], key=lambda row: row["speedup"])
    values["best batch-1 speedup"] = best["speedup"]
    values["at"] = f"{best['method']}, gamma {best['gamma']}"
    return Section(
        "Real numbers and speedup",
        [
            Step(
                f"Source: {source}. Speedup = time of the target alone / time with speculation "
                f"for the same greedy tokens (the outputs are identical); alpha = accepted / "
                f"examined drafts; tokens per target forward as counted by the loop.",
                values=values,
                decimals=2,
            )
        ],
    )


USED_IN = [
    ["vLLM", "draft model, n-gram (prompt lookup), EAGLE, MTP, suffix decoding, ...",
     "speculative_config={'model': ..., 'num_speculative_tokens': 5}; docs: reduces "
     "inter-token latency for memory-bound, medium-to-low QPS workloads"],
    ["Hugging Face TGI", "Medusa heads, n-gram", "--speculate N; docs: LLMs are usually memory "
     "bound, so good guesses give 2-3x faster inference"],
    ["llama.cpp", "draft model (same tokenizer), n-gram lookup",
     "llama-server / llama-cli --model-draft (-md), --draft-max; examples/speculative, "
     "examples/lookup"],
    ["HF transformers", "assisted decoding: assistant model, prompt lookup",
     "generate(assistant_model=...), generate(prompt_lookup_num_tokens=...); docs: greedy and "
     "sampling, not batched inputs"],
]  # fmt: skip


def _section_where_used() -> Section:
    return Section(
        "Where it is used",
        [
            Step(
                "Every major inference stack ships it, as their documentation states (names and "
                "flags from each project's docs; this project's `generate --draft-model PATH | "
                "--ngram` and the engine's `--speculative-model` follow the same shape):",
                values={
                    "implementations": Table(
                        ["system", "draft sources", "how, per its docs"], USED_IN
                    )
                },  # fmt: skip
            )
        ],
    )


def _section_trade_offs(measured: dict[str, Any]) -> Section:
    c = measured["batch1"][0]["c"]
    grid = [[alpha, *(speedup(alpha, g, c) for g in GAMMAS),
             max(GAMMAS, key=lambda g: speedup(alpha, g, c))] for alpha in ALPHAS]  # fmt: skip
    points = [[row["method"], row["gamma"], row["alpha"], speedup(row["alpha"], row["gamma"], c),
               row["speedup"]]
              for row in measured["batch1"] if row["method"] == "draft" and row.get("alpha")
              is not None]  # fmt: skip
    engine = [[row["batch"], row["method"], row["gamma"], row["speedup"]]
              for row in measured.get("engine", [])]  # fmt: skip
    values: dict[str, Any] = {
        "c = draft step / target step (measured)": c,
        "predicted speedup E / (gamma c + 1)": Table(
            ["alpha", *(f"gamma {g}" for g in GAMMAS), "best gamma"], grid),
        "measured (draft model)": Table(
            ["method", "gamma", "alpha", "predicted", "measured"], points),
    }  # fmt: skip
    if engine:
        values["larger batches (engine)"] = Table(["batch", "method", "gamma", "speedup"], engine)
    return Section(
        "Trade-offs",
        [
            Step(
                "Each round costs gamma draft steps plus one target forward and yields "
                "E(alpha, gamma) tokens. A higher acceptance rate alpha pays for longer "
                "drafts; a costlier draft (larger c) makes every rejected guess expensive; "
                "at low alpha extra drafts are wasted work. In a batch the target's forward "
                "is no longer a bare weight read: it already serves many sequences, so the "
                "free capacity speculation uses shrinks as the batch grows. The formula also "
                "takes a verification forward to cost one decode step; on a CPU it costs more "
                "(the time ratio measured above), so measured speedups fall short of it.",
                formula="speedup = (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))",
                values=values,
                decimals=2,
            )
        ],
    )


def _section_summary(r: Round, measured: dict[str, Any], source: str) -> Section:
    best = max(measured["batch1"], key=lambda row: row["speedup"])
    error = max(exactness(r.p[i], r.q[i])["max_error"] for i in range(GAMMA))
    return Section(
        "Quick summary",
        [
            Step(
                f"- Decoding reads every weight once per token; verifying {GAMMA + 1} tokens "
                f"reads them once for all.\n"
                f"- A draft proposes, the target verifies in one forward; accept x with "
                f"probability min(1, p(x)/q(x)), else draw from norm(max(0, p - q)).\n"
                f"- The output distribution is exactly p: min(p, q) + (1 - beta) residual = p "
                f"(checked above to {error:.1e}).\n"
                f"- Greedy: accept while the draft equals the target's argmax; the output equals "
                f"the target's own greedy output.\n"
                f"- Measured ({source.split(' (')[0]}): best batch-1 speedup "
                f"{best['speedup']:.2f}x "
                f"({best['method']}, gamma {best['gamma']}).",
            )
        ],
    )


def build() -> Lesson:
    target, draft, tok = lesson_models()
    r = Round(target, draft, tok)
    measured = load_results()
    if measured is not None:
        source = f"the results file of benchmarks/speculative.py ({results_path()})"
    else:
        measured = live_measurement(target, draft, tok)
        source = (
            "a live measurement on this lesson's tiny models (no results file of "
            "benchmarks/speculative.py found; run it for the trained 768-wide target)"
        )
    return Lesson(
        name=INFO.name,
        title=INFO.title,
        summary=INFO.summary,
        sections=[
            _section_problem(target, tok),
            _section_big_picture(target, draft, tok),
            _section_why_slow(target),
            _section_core_idea(target, draft, tok),
            _section_walkthrough(r),
            _section_verification(r),
            _section_real_numbers(measured, source),
            _section_where_used(),
            _section_trade_offs(measured),
            _section_summary(r, measured, source),
        ],
    )
