"""The runs of benchmarks/speculative.py: ours (generate, engine) and HF's, and their tables.

Each `*_runners` returns named zero-argument callables (one configuration over all prompts, so
the benchmark can time them interleaved) and keeps what the last call produced (tokens, stats),
from which `rows(seconds)` builds the table rows.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from llm_internals.console import console
from llm_internals.data import corpus, train_val_split
from llm_internals.files import write_json
from llm_internals.inference.decode_layout import use_decode_layout
from llm_internals.inference.generate import generate
from llm_internals.inference.params import SamplingParams


def expected_tokens(alpha: float, gamma: float) -> float:
    """E = (1 - alpha^(gamma+1)) / (1 - alpha): tokens per target forward with i.i.d. acceptance
    at rate alpha (gamma + 1 when alpha = 1)."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def predicted_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al.'s walltime factor E / (gamma c + 1), c = draft step / target step."""
    return expected_tokens(alpha, gamma) / (gamma * c + 1.0)


@dataclass
class Prompts:
    ids: list[list[int]]
    new_tokens: int

    @classmethod
    def from_validation(cls, files: Any, count: int, length: int, new_tokens: int) -> Prompts:
        """`count` prompts of `length` tokens, spread evenly over the validation text."""
        _, tokenizer = files.load()
        _, val = train_val_split(corpus("shakespeare"), 0.1)
        ids = tokenizer.encode(val[:200_000])
        step = (len(ids) - length) // max(count, 1)
        return cls([ids[i * step : i * step + length] for i in range(count)], new_tokens)


@dataclass
class Runs:
    """Named runners plus what their last call produced: tokens[name] (one list per prompt),
    stats[name] (summed speculation counters)."""

    runners: dict[str, Callable[[], None]] = field(default_factory=dict)
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    gammas: list[int] = field(default_factory=list)
    new_tokens: int = 0
    prefix: str = "ours"

    def same(self, name: str, reference: str) -> bool:
        return self.tokens.get(name) == self.tokens.get(reference)


def speculative_generate_kwargs(draft: torch.nn.Module | None, gamma: int) -> dict[str, Any]:
    """The arguments `generate` takes for speculation (draft model or n-gram lookup)."""
    if draft is None:
        return {"ngram": True, "num_speculative_tokens": gamma}
    return {"draft_model": draft, "num_speculative_tokens": gamma}


def generate_supports_speculation() -> bool:
    return "num_speculative_tokens" in inspect.signature(generate).parameters


def spec_counts(stats: Any) -> dict[str, int]:
    """A SpeculativeStats as plain counts: drafts proposed, accepted, examined (accepted +
    the first rejected one of each round), sequence-rounds (target forwards at batch 1) and
    tokens those rounds emitted."""
    if stats is None:
        return {}
    return {"proposed": stats.proposed, "accepted": stats.accepted, "examined": stats.examined,
            "forwards": stats.rounds, "emitted": stats.tokens_emitted}  # fmt: skip


def ours_runners(target_files: Any, draft_files: Any, prompts: Prompts, gammas: list[int]) -> Runs:
    target = use_decode_layout(target_files.load()[0])
    draft = use_decode_layout(draft_files.load()[0])
    runs = Runs(gammas=gammas, new_tokens=prompts.new_tokens)

    def runner(name: str, model: torch.nn.Module, **extra: Any) -> Callable[[], None]:
        def run() -> None:
            outputs, counts = [], {}
            for ids in prompts.ids:
                stats = None
                if extra:
                    from llm_internals.inference.speculative.stats import SpeculativeStats

                    stats = extra["speculative_stats"] = SpeculativeStats()
                result = generate(model, None, ids, max_new_tokens=prompts.new_tokens,
                                  eos_token_id=None, **extra)  # fmt: skip
                outputs.append(result.token_ids)
                for key, value in spec_counts(stats).items():
                    counts[key] = counts.get(key, 0) + value
            runs.tokens[name], runs.stats[name] = outputs, counts

        return run

    runs.runners["ours target alone"] = runner("ours target alone", target)
    runs.runners["ours draft alone"] = runner("ours draft alone", draft)
    if generate_supports_speculation():
        for gamma in gammas:
            for label, source in (("draft", draft), ("n-gram", None)):
                name = f"ours {label} g={gamma}"
                kwargs = speculative_generate_kwargs(source, gamma)
                runs.runners[name] = runner(name, target, **kwargs)
    else:
        console.print("generate has no speculation yet (num_speculative_tokens): target only")
    return runs


def batch1_rows(runs: Runs, seconds: dict[str, float]) -> list[dict[str, Any]]:
    """One row per gamma: alpha, E(alpha, gamma), observed tokens per forward, tokens/s,
    speedups (measured and predicted from c), for the draft model and for n-gram lookup."""
    n_tokens = runs.new_tokens * len(runs.tokens.get("ours target alone", [[]]))
    base = seconds["ours target alone"]
    c = seconds["ours draft alone"] / base  # draft step / target step (same tokens, same loop)
    rows = [{"method": "target alone", "gamma": 0, "tokens_per_s": n_tokens / base,
             "speedup": 1.0, "c": c}]  # fmt: skip
    for gamma in runs.gammas:
        for label in ("draft", "n-gram"):
            name = f"ours {label} g={gamma}"
            if name not in seconds:
                continue
            counts = runs.stats.get(name, {})
            rate = counts["accepted"] / counts["proposed"] if counts.get("proposed") else None
            alpha = counts["accepted"] / counts["examined"] if counts.get("examined") else None
            per_forward = counts["emitted"] / counts["forwards"] if counts.get("forwards") else None
            row = {
                "method": label, "gamma": gamma, "acceptance_rate": rate, "alpha": alpha,
                "mean_gamma": counts["proposed"] / counts["forwards"] if counts else None,
                "expected_tokens_per_forward": None if alpha is None
                else expected_tokens(alpha, counts["proposed"] / counts["forwards"]),
                "tokens_per_forward": per_forward,
                "tokens_per_s": n_tokens / seconds[name], "speedup": base / seconds[name],
                "same_tokens": runs.same(name, "ours target alone"),
            }  # fmt: skip
            if label == "draft" and alpha is not None:
                row["predicted_speedup"] = predicted_speedup(alpha, gamma, c)
            rows.append(row)
    return rows


def hf_runners(target_files: Any, draft_files: Any, prompts: Prompts, gammas: list[int]) -> Runs:
    """HF transformers on the same weights (our save_pretrained export): plain greedy, assisted
    generation with the draft at a constant gamma (confidence cut-off off, so it drafts exactly
    gamma tokens as ours does), assisted with HF's defaults (20 tokens, heuristic schedule,
    confidence threshold 0.4; reset every call), and prompt lookup (n-gram) at each gamma."""
    import transformers

    transformers.logging.set_verbosity_error()  # the export's GPT-2 bos/eos ids (unused here)
    target = transformers.AutoModelForCausalLM.from_pretrained(target_files.hf_path).eval()
    draft = transformers.AutoModelForCausalLM.from_pretrained(draft_files.hf_path).eval()
    for model in (target, draft):
        model.generation_config.eos_token_id = None  # fixed lengths, as ours (no eos stop)
        model.generation_config.bos_token_id = None
        model.generation_config.pad_token_id = 0
    runs = Runs(gammas=gammas, new_tokens=prompts.new_tokens, prefix="HF")

    def runner(name: str, assistant: dict[str, Any] | None = None, **extra: Any):
        def run() -> None:
            if assistant is not None:
                for key, value in assistant.items():
                    setattr(draft.generation_config, key, value)
            outputs = []
            for ids in prompts.ids:
                x = torch.tensor([ids])
                with torch.inference_mode():
                    out = target.generate(
                        x, attention_mask=torch.ones_like(x), do_sample=False,
                        max_new_tokens=prompts.new_tokens, min_new_tokens=prompts.new_tokens,
                        **({"assistant_model": draft} if assistant is not None else {}), **extra,
                    )  # fmt: skip
                outputs.append(out[0, len(ids) :].tolist())
            runs.tokens[name] = outputs

        return run

    runs.runners["HF target alone"] = runner("HF target alone")
    for gamma in gammas:
        constant = {"num_assistant_tokens": gamma, "num_assistant_tokens_schedule": "constant",
                    "assistant_confidence_threshold": 0.0}  # fmt: skip
        runs.runners[f"HF assisted g={gamma}"] = runner(f"HF assisted g={gamma}", constant)
        runs.runners[f"HF prompt lookup g={gamma}"] = runner(
            f"HF prompt lookup g={gamma}", prompt_lookup_num_tokens=gamma
        )
    defaults = {"num_assistant_tokens": 20, "num_assistant_tokens_schedule": "heuristic_transient",
                "assistant_confidence_threshold": 0.4}  # fmt: skip
    runs.runners["HF assisted defaults"] = runner("HF assisted defaults", defaults)
    return runs


def hf_rows(runs: Runs, seconds: dict[str, float], ours: Runs) -> list[dict[str, Any]]:
    """HF tokens/s and speedup over HF's own plain greedy; whether the tokens equal ours."""
    n_tokens = runs.new_tokens * len(runs.tokens["HF target alone"])
    base = seconds["HF target alone"]
    rows = []
    for name in runs.runners:
        rows.append({
            "method": name.removeprefix("HF "), "tokens_per_s": n_tokens / seconds[name],
            "speedup": base / seconds[name],
            "same_tokens": runs.tokens[name] == ours.tokens.get("ours target alone"),
        })  # fmt: skip
    return rows


def engine_rows(target_files: Any, draft_files: Any, prompts: Prompts, batches: list[int],
                gammas: list[int], reps: int) -> list[dict[str, Any]]:  # fmt: skip
    """The paged engine at each batch size: no speculation vs the draft model and n-gram at each
    gamma; useful tokens/s over the batch (median of `reps` interleaved runs), acceptance."""
    from llm_internals.inference.paged.engine import LLM

    if "num_speculative_tokens" not in inspect.signature(LLM).parameters:
        console.print("the engine has no speculation yet: engine rows left out")
        return []
    params = SamplingParams(temperature=0.0, max_tokens=prompts.new_tokens, ignore_eos=True)
    configs: dict[str, dict[str, Any]] = {"engine target alone": {}}
    for gamma in gammas:
        configs[f"engine draft g={gamma}"] = {"speculative_model": str(draft_files.path),
                                              "num_speculative_tokens": gamma}  # fmt: skip
        configs[f"engine n-gram g={gamma}"] = {"speculative_ngram": True,
                                               "num_speculative_tokens": gamma}  # fmt: skip
    rows = []
    for batch in batches:
        batch_prompts = [prompts.ids[i % len(prompts.ids)] for i in range(batch)]
        engines = {name: LLM(str(target_files.path), max_num_seqs=batch, eos_token_id=None,
                             **extra) for name, extra in configs.items()}  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name in engines}
        tokens: dict[str, list[list[int]]] = {}
        for rep in range(reps + 1):  # the first round warms up
            for name, engine in engines.items():
                start = time.perf_counter()
                outputs = engine.generate(batch_prompts, params)
                if rep:
                    samples[name].append(time.perf_counter() - start)
                tokens[name] = [o.token_ids for o in outputs]
        n_tokens = batch * prompts.new_tokens
        base = statistics.median(samples["engine target alone"])
        for name, engine in engines.items():
            spec = engine.stats().speculative  # cumulative over the runs: ratios stay right
            method, _, gamma = name.removeprefix("engine ").partition(" g=")
            rows.append({
                "batch": batch, "method": method, "gamma": int(gamma or 0),
                "acceptance_rate": spec.acceptance_rate if spec and spec.proposed else None,
                "alpha": spec.alpha if spec and spec.examined else None,
                "tokens_per_forward": spec.tokens_per_target_forward if spec and spec.rounds
                else None,
                "tokens_per_s": n_tokens / statistics.median(samples[name]),
                "speedup": base / statistics.median(samples[name]),
                "same_tokens": tokens[name] == tokens["engine target alone"],
            })  # fmt: skip
        console.print(f"  engine batch {batch} done", style="dim")
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_tables(results: dict[str, Any]) -> None:
    out = console if console.is_terminal else Console(width=150)  # a log file: no wrapping
    load = " / ".join(f"{x:.2f}" for x in results["load_average_before"])
    c = results["batch1"][0]["c"]
    table = Table(title=f"batch 1, greedy, {results['prompts']} prompts x {results['new_tokens']} "
                  f"new tokens (load average before {load}; c = draft/target step = {c:.3f})",
                  title_justify="left")  # fmt: skip
    columns = ("method", "gamma", "accept rate", "alpha", "E(alpha,gamma)", "tokens/forward",
               "tok/s", "speedup", "predicted", "same")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "method" else "right")
    for row in results["batch1"]:
        table.add_row(row["method"], str(row["gamma"]), _fmt(row.get("acceptance_rate"), 3),
                      _fmt(row.get("alpha"), 3),
                      _fmt(row.get("expected_tokens_per_forward")),
                      _fmt(row.get("tokens_per_forward")), _fmt(row["tokens_per_s"], 1),
                      f"{row['speedup']:.2f}x", _fmt(row.get("predicted_speedup")),
                      _fmt(row.get("same_tokens")))  # fmt: skip
    out.print(table)
    if results["hf"]:
        hf = Table(title="HF transformers reference, same weights (speedup over HF plain greedy)",
                   title_justify="left")  # fmt: skip
        for col in ("method", "tok/s", "speedup", "same tokens as ours"):
            hf.add_column(col, justify="left" if col == "method" else "right")
        for row in results["hf"]:
            hf.add_row(row["method"], _fmt(row["tokens_per_s"], 1), f"{row['speedup']:.2f}x",
                       _fmt(row["same_tokens"]))  # fmt: skip
        out.print(hf)
    if results["engine"]:
        engine = Table(title="paged engine, greedy (speedup over the engine without speculation)",
                       title_justify="left")  # fmt: skip
        for col in ("batch", "method", "gamma", "accept rate", "tokens/forward", "tok/s", "speedup",
                    "same"):  # fmt: skip
            engine.add_column(col, justify="left" if col == "method" else "right")
        for row in results["engine"]:
            engine.add_row(str(row["batch"]), row["method"], str(row["gamma"]),
                           _fmt(row["acceptance_rate"], 3), _fmt(row["tokens_per_forward"]),
                           _fmt(row["tokens_per_s"], 1), f"{row['speedup']:.2f}x",
                           _fmt(row["same_tokens"]))  # fmt: skip
        out.print(engine)
    after = " / ".join(f"{x:.2f}" for x in results["load_average_after"])
    console.print(f"load average (1/5/15 min) before {load}, after {after}")


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results)
