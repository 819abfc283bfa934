"""Mixture of experts and latent attention, measured (issue 15).

    .venv/bin/python benchmarks/moe.py [all|train|dispatch|mla] [--quick] [--threads 1]

train     Dense vs MoE with equal active parameters on the default corpus (Shakespeare, char
          tokens), same batches, same steps; and three MoE runs differing only in balancing:
          none, the Switch aux loss (0.01, the trainer's default), the bias update (gamma).
          The four trainers step in turn (dense, none, aux, bias, dense, ...), so machine load
          hits all alike. Validation loss vs training FLOPs and vs training time (CPU time of
          the one thread: what a free core's wall clock would show)
          (docs/figures/moe_vs_dense.png); coefficient of variation of expert load per step and
          the final per-expert shares (docs/figures/moe_load_balance.png).
          FLOPs per token = 3 x forward, forward = 2 x (weights a token is multiplied by:
          attention, k of E experts, router, head) + 2 x L x T x d (causal scores and values).
dispatch  One MoE layer, forward and forward+backward: sorted (default) vs per-token loop vs
          dense, and vs HF's MixtralSparseMoeBlock holding the same weights, at 8/16/64 experts
          (alternating rounds, median CPU time; outputs compared).
mla       KV values per token and decode tokens/s of three random DecoderLMs of the same width:
          MHA, GQA and MLA (latent cache), greedy generate, (t(N) - t(1)) / (N - 1) per token
          in CPU time (benchmarks/mla_modes.py splits MLA's naive and absorbed modes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_internals.console import console, progress  # noqa: E402
from llm_internals.inference.generate import generate  # noqa: E402
from llm_internals.inference.kv_layout import kv_layout  # noqa: E402
from llm_internals.layers.moe import MoEConfig, MoELayer  # noqa: E402
from llm_internals.models import DecoderLM, ModelConfig  # noqa: E402
from llm_internals.training.config import TrainConfig  # noqa: E402
from llm_internals.training.moe_terms import moe_layers  # noqa: E402
from llm_internals.training.run import prepare_data  # noqa: E402
from llm_internals.training.trainer import Trainer, build_model  # noqa: E402
from mla_modes import interleaved  # noqa: E402  (the same interleaved CPU-time timer)

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
BASE = {
    "d_model": 128,
    "n_layers": 4,
    "n_heads": 4,
    "position": "rope",
    "norm": "rmsnorm",
    "ffn": "gated",
    "activation": "silu",
    "tie_embeddings": True,
}
EXPERTS, TOP_K, D_EXPERT = 8, 2, 256  # dense d_ff = TOP_K * D_EXPERT: equal active parameters


def load_note() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ----- train: dense vs MoE, and balancing ------------------------------------------------------
def train_flops_per_token(model: DecoderLM, block_size: int) -> float:
    """3 x forward; forward = 2 x active matmul weights + 2 L T d (module docstring)."""
    config = model.config
    active = 0
    for name, p in model.named_parameters():
        lookup = name.startswith("pos_") or name.startswith("tok_emb") and not config.tie_embeddings
        if p.ndim < 2 or lookup:  # norm gains, and tables only indexed (a tied one is the head)
            continue
        active += p.numel()
    for layer in moe_layers(model):
        expert = sum(p.numel() for p in layer.experts.parameters())
        active -= expert * (1 - layer.config.top_k / layer.config.n_experts)
    return 3 * (2 * active + 2 * config.n_layers * block_size * config.d_model)


@dataclass
class Run:
    """One of the four trainers and what it measured."""

    trainer: Trainer
    flops_per_token: float
    seconds: float = 0.0  # CPU time in train_step only
    # (step, FLOPs so far, CPU seconds so far, validation loss) at each evaluation
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)
    cvs: list[float] = field(default_factory=list)  # load CV per step (MoE runs)
    loads: list[torch.Tensor] = field(default_factory=list)  # [layers, E] per step

    def step(self, number: int, args: argparse.Namespace) -> None:
        start = time.process_time()  # one thread: the wall time of a free core
        self.trainer.train_step()
        self.seconds += time.process_time() - start
        if self.trainer.last_moe_stats is not None:
            self.cvs.append(self.trainer.last_moe_stats.load_cv)
            self.loads.append(torch.stack(self.trainer.last_moe_stats.loads))
        if number % args.eval_every == 0 or number == args.steps:
            val = self.trainer.estimate_loss(self.trainer.splits.val)
            flops = self.flops_per_token * self.trainer.config.tokens_per_step * number
            self.curve.append((number, flops, self.seconds, val))

    def shares(self, tail: int) -> torch.Tensor:
        """[layers, E] % of the tokens each expert took over the last `tail` steps."""
        load = torch.stack(self.loads[-tail:]).sum(dim=0)
        return 100 * TOP_K * load / load.sum(dim=-1, keepdim=True)


def run_training(args: argparse.Namespace) -> None:
    moe = {"d_expert": D_EXPERT, "n_experts": EXPERTS, "top_k": TOP_K}
    common = dict(out_dir=args.out_dir, max_steps=args.steps, warmup_steps=args.steps // 10,
                  eval_interval=0, eval_iters=args.eval_iters, seed=1337,
                  block_size=args.block_size)  # fmt: skip
    configs = {
        "dense": TrainConfig(model={**BASE, "d_ff": TOP_K * D_EXPERT}, **common),
        "moe none": TrainConfig(
            model={**BASE, "moe": moe}, moe_aux_loss_coef=0.0, moe_z_loss_coef=0.0, **common
        ),
        "moe aux": TrainConfig(model={**BASE, "moe": moe}, **common),
        "moe bias": TrainConfig(
            model={**BASE, "moe": moe},
            moe_aux_loss_coef=0.0,
            moe_bias_update_rate=args.gamma,
            **common,
        ),
    }
    tokenizer, splits = prepare_data(configs["dense"])
    runs = {}
    for name, cfg in configs.items():
        model = build_model(cfg, tokenizer.vocab_size)
        trainer = Trainer(cfg, model, tokenizer, splits, show_progress=False)
        runs[name] = Run(trainer, train_flops_per_token(model, args.block_size))
    console.print(f"training 4 models for {args.steps} steps in turn ({load_note()})")
    bar = progress()
    task = bar.add_task("training, 4 models in turn", total=args.steps)
    with bar:
        for number in range(1, args.steps + 1):
            for run in runs.values():
                run.step(number, args)
            bar.update(task, completed=number)
    console.print(f"done ({load_note()})")
    report_training(args, runs)


def report_training(args: argparse.Namespace, runs: dict[str, Run]) -> None:
    table = Table(title=f"{args.steps} steps of 12 x {args.block_size} char tokens, same batches")
    for column in ("run", "params", "GFLOP/step", "CPU s/step", "val loss", "load CV",
                   "share min-max", "aux"):  # fmt: skip
        table.add_column(column, justify="right")
    tail = max(args.steps // 10, 1)
    for name, run in runs.items():
        n_params = sum(p.numel() for p in run.trainer.model.parameters())
        cv = share = aux = "-"
        if run.cvs:
            cv = f"{statistics.mean(run.cvs[-tail:]):.3f}"
            shares = run.shares(tail)
            share = f"{shares.min():.1f}-{shares.max():.1f}%"
            aux = f"{run.trainer.last_moe_stats.aux_loss:.3f}"
        gflop = run.flops_per_token * run.trainer.config.tokens_per_step / 1e9
        table.add_row(name, f"{n_params / 1e6:.2f}M", f"{gflop:.2f}",
                      f"{run.seconds / args.steps:.3f}", f"{run.curve[-1][3]:.4f}", cv, share,
                      aux)  # fmt: skip
    console.print(table)
    console.print(
        "load CV: std/mean of expert load, mean over layers and the last 10% of steps; share: "
        f"tokens an expert took / all tokens, per layer ({100 * TOP_K / EXPERTS:.0f}% each when "
        f"even, k/E = {TOP_K}/{EXPERTS}); CV of a collapse onto k experts: "
        f"{(EXPERTS / TOP_K - 1) ** 0.5:.3f}; aux loss minimum k = {TOP_K}"
    )
    if not args.no_figures:
        draw_training_figures(args, runs, tail)


def draw_training_figures(args: argparse.Namespace, runs: dict[str, Run], tail: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        left.plot([p[1] / 1e12 for p in run.curve], [p[3] for p in run.curve], ".-", label=name)
        right.plot([p[2] for p in run.curve], [p[3] for p in run.curve], ".-", label=name)
    left.set(xlabel="training TFLOPs (active weights + attention)", ylabel="validation loss")
    right.set(xlabel="training time (s of CPU time, 1 thread; " + load_note() + ")")
    left.legend()
    fig.suptitle(f"dense vs MoE ({EXPERTS} experts, top-{TOP_K}) at equal active parameters")
    fig.tight_layout()
    fig.savefig(FIGURES / "moe_vs_dense.png", dpi=110)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    window = max(args.steps // 50, 1)
    moe_runs = {name: run for name, run in runs.items() if run.cvs}
    for name, run in moe_runs.items():
        cvs = run.cvs
        smooth = [statistics.mean(cvs[max(0, i - window + 1) : i + 1]) for i in range(len(cvs))]
        left.plot(range(1, len(cvs) + 1), smooth, label=name)
    collapse = (EXPERTS / TOP_K - 1) ** 0.5
    left.axhline(collapse, color="grey", linestyle=":", label="all on k experts")
    left.set(xlabel="step", ylabel=f"CV of expert load (layer mean, {window}-step mean)")
    left.legend()
    width = 0.27
    for i, (name, run) in enumerate(moe_runs.items()):
        share = run.shares(tail).mean(dim=0)
        right.bar([e + (i - 1) * width for e in range(EXPERTS)], share.tolist(), width, label=name)
    right.axhline(100 * TOP_K / EXPERTS, color="grey", linestyle=":")
    right.set(xlabel="expert", ylabel="% of tokens (layer mean, last 10% of steps)")
    right.legend()
    fig.tight_layout()
    fig.savefig(FIGURES / "moe_load_balance.png", dpi=110)
    console.print(f"wrote {FIGURES / 'moe_vs_dense.png'} and {FIGURES / 'moe_load_balance.png'}")


# ----- dispatch: sorted vs loop vs dense vs HF -------------------------------------------------
@torch.no_grad()
def hf_mixtral_block(layer: MoELayer):
    """HF's MixtralSparseMoeBlock holding `layer`'s weights (gate rows first in gate_up_proj)."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    c = layer.config
    hf = MixtralSparseMoeBlock(
        MixtralConfig(
            hidden_size=c.d_model,
            intermediate_size=c.d_expert,
            num_local_experts=c.n_experts,
            num_experts_per_tok=c.top_k,
        )
    )
    hf.gate.weight.copy_(layer.router.weight)
    for e, expert in enumerate(layer.experts):
        hf.experts.gate_up_proj[e].copy_(
            torch.cat([expert.gate_proj.weight, expert.up_proj.weight], dim=0)
        )
        hf.experts.down_proj[e].copy_(expert.down_proj.weight)
    return hf


def run_dispatch(args: argparse.Namespace) -> None:
    tokens = 128 if args.quick else 512
    d_model, d_expert = 256, 256
    table = Table(
        title=f"one MoE layer, ms: {tokens} tokens, d {d_model}, expert width "
        f"{d_expert}, top-2, median of {args.rounds} alternating rounds ({load_note()})"
    )
    for column in ("E", "pass", "sorted", "loop", "dense", "HF", "loop/s", "dense/s", "HF/s"):
        table.add_column(column, justify="right")
    for n_experts in (8, 16, 64):
        torch.manual_seed(0)
        layers = {
            mode: MoELayer(MoEConfig(d_model, d_expert, n_experts, 2, dispatch=mode))
            for mode in ("sorted", "loop", "dense")
        }
        for mode in ("loop", "dense"):
            layers[mode].load_state_dict(layers["sorted"].state_dict())
        blocks = {**layers, "HF": hf_mixtral_block(layers["sorted"])}
        x = torch.randn(1, tokens, d_model)
        grad = torch.randn_like(x)
        with torch.no_grad():
            ref = blocks["sorted"](x)
            diff = max(float((blocks[m](x) - ref).abs().max()) for m in ("loop", "dense", "HF"))
        forward = {m: (lambda b=b, x=x: b(x).detach()) for m, b in blocks.items()}
        both = {m: (lambda b=b, x=x, g=grad: b(x).backward(g)) for m, b in blocks.items()}
        for label, fns in (("forward", forward), ("fwd+bwd", both)):
            with torch.no_grad() if label == "forward" else torch.enable_grad():
                ms = interleaved(fns, args.rounds)
            table.add_row(
                str(n_experts),
                label,
                *(f"{ms[m]:.1f}" for m in blocks),
                *(f"{ms[m] / ms['sorted']:.2f}x" for m in ("loop", "dense", "HF")),
            )
        console.print(f"{n_experts} experts: max |output - sorted| over loop/dense/HF = {diff:.1e}")
    console.print(table)


# ----- MLA: KV bytes and decode speed vs MHA and GQA -------------------------------------------
def run_mla(args: argparse.Namespace) -> None:
    width = dict(
        vocab_size=256,
        d_model=256,
        n_layers=4,
        n_heads=8,
        max_seq_len=2048,
        attn_impl="sdpa",
        fused_ops=True,
    )
    head = width["d_model"] // width["n_heads"]
    mla = {
        "kv_lora_rank": 4 * head,
        "qk_rope_head_dim": head // 2,
        "qk_nope_head_dim": head,
        "v_head_dim": head,
        "q_lora_rank": None,
    }  # V3 ratios
    configs = {
        "MHA": ModelConfig(**width),
        "GQA-2": ModelConfig(**width, n_kv_heads=2),
        "MLA": ModelConfig(**width, mla=mla),
    }
    torch.manual_seed(0)
    models = {name: DecoderLM(c).eval() for name, c in configs.items()}
    prompt = torch.randint(0, 256, (args.prompt_len,)).tolist()
    new = 16 if args.quick else 64

    def decode(model: DecoderLM, n: int) -> Callable[[], object]:
        return lambda: generate(model, None, prompt, max_new_tokens=n, eos_token_id=None)

    with torch.no_grad():
        long = interleaved({n: decode(m, new) for n, m in models.items()}, args.rounds)
        short = interleaved({n: decode(m, 1) for n, m in models.items()}, args.rounds)
    table = Table(
        title=f"random decoders, d 256, 8 heads, 4 layers, prompt {args.prompt_len}, "
        f"{new} new tokens, greedy, batch 1 ({load_note()}); KV per token: values "
        "per layer, bytes for 4 layers in fp32"
    )
    for column in ("attention", "KV values", "KV bytes", "vs MHA", "params", "ms/token", "tok/s"):
        table.add_column(column, justify="right")
    mha = kv_layout(configs["MHA"]).values_per_token
    for name, model in models.items():
        values = kv_layout(configs[name]).values_per_token
        per_token = (long[name] - short[name]) / (new - 1)
        table.add_row(
            name,
            str(values),
            f"{values * 4 * 4:,}",
            f"{mha / values:.2f}x less",
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M",
            f"{per_token:.2f}",
            f"{1000 / per_token:,.0f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "section",
        nargs="?",
        default="all",
        choices=("all", "train", "dispatch", "mla"),
        help="what to measure (default all)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per model (default 500; 40 with --quick)",
    )
    parser.add_argument("--block-size", type=int, default=64, help="context length (default 64)")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="steps between validation losses (default steps/10)",
    )
    parser.add_argument("--eval-iters", type=int, default=10, help="validation batches (10)")
    parser.add_argument(
        "--gamma", type=float, default=0.01, help="bias update rate of the bias run (default 0.01)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timing rounds for dispatch and mla (default 3; 2 with --quick)",
    )
    parser.add_argument("--prompt-len", type=int, default=256, help="MLA decode prompt (256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out-dir", default="out/bench-moe", help="token cache (out/bench-moe)")
    parser.add_argument("--no-figures", action="store_true", help="print tables only")
    args = parser.parse_args()
    args.steps = args.steps or (40 if args.quick else 500)
    args.eval_every = args.eval_every or max(args.steps // 10, 1)
    args.rounds = args.rounds or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    FIGURES.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.section in ("all", "train"):
        run_training(args)
    if args.section in ("all", "dispatch"):
        run_dispatch(args)
    if args.section in ("all", "mla"):
        run_mla(args)
    console.print(f"total {time.perf_counter() - started:.0f} s, {load_note()}")


if __name__ == "__main__":
    main()
