"""Training benchmarks: real runs and throughput, each printed next to its reference.

    python benchmarks/training.py throughput   # our trainer vs a plain torch loop (ratio)
    python benchmarks/training.py backprop     # hand-written backward vs autograd (ratio)
    python benchmarks/training.py optimizers --steps 300   # AdamW vs Muon loss curves (PNG)
    python benchmarks/training.py char         # nanoGPT's shakespeare-char CPU run
    python benchmarks/training.py bpe --minutes 30   # 6-layer/384-dim BPE model on the clock

Throughput and backprop time alternating rounds of the two sides and report medians, so a
machine shared with other work slows both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from llm_internals.console import console
from llm_internals.data import corpus
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import prepare_data, run_training
from llm_internals.training.trainer import Trainer, build_model

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"


def char_config(**changes) -> TrainConfig:
    return TrainConfig.load(ROOT / "configs" / "shakespeare-char.toml").with_overrides(changes)


def interleaved(fns: dict[str, callable], rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each fn, measured in alternating rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(s) for name, s in samples.items()}


def throughput(args: argparse.Namespace) -> None:
    """Our Trainer.train_step (our AdamW, our cross-entropy with the hand-written softmax - onehot
    gradient, our clipping, schedule) against torch.optim.AdamW + F.cross_entropy +
    clip_grad_norm_, on the same DecoderLM (SDPA attention, fused norms) and the same batches."""
    text = corpus("shakespeare")
    rows = {dtype: _throughput_one(dtype, args, text) for dtype in ("float32", "bfloat16")}
    table = Table(
        title=f"training step, shakespeare-char model, batch 12 x 64 ({args.rounds} "
        "alternating rounds, median)"
    )
    for column in ("dtype", "ours ms", "torch loop ms", "ours tok/s", "torch tok/s", "ours/torch"):
        table.add_column(column, justify="right")
    for dtype, (ms, tokens) in rows.items():
        table.add_row(
            dtype,
            f"{ms['ours']:.1f}",
            f"{ms['torch']:.1f}",
            f"{tokens / ms['ours'] * 1000:,.0f}",
            f"{tokens / ms['torch'] * 1000:,.0f}",
            f"{ms['torch'] / ms['ours']:.2f}x speed",
        )
    console.print(table)
    bf16_gain = rows["float32"][0]["ours"] / rows["bfloat16"][0]["ours"]
    console.print(f"bf16 autocast vs float32 (ours): {bf16_gain:.2f}x speed")


def _throughput_one(dtype: str, args: argparse.Namespace, text: str) -> tuple[dict, int]:
    config = char_config(out_dir=args.out_dir, dtype=dtype, eval_interval=0)
    tokenizer, splits = prepare_data(config, text=text)
    ours = Trainer(
        config, build_model(config, tokenizer.vocab_size), tokenizer, splits, show_progress=False
    )
    model = build_model(config, tokenizer.vocab_size)
    ref_opt = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay
    )
    ref_batches = Trainer(config, model, tokenizer, splits, show_progress=False).batches
    autocast = dtype == "bfloat16"

    def reference_step() -> None:
        x, y = ref_batches.next_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        ref_opt.step()

    ms = interleaved({"ours": ours.train_step, "torch": reference_step}, args.rounds)
    return ms, config.tokens_per_step


def backprop(args: argparse.Namespace) -> None:
    """The hand-written backward of training/backprop (forward + backward, no autograd) against
    autograd's forward + backward, same GPT-2 model (gelu_tanh), same batch, float32."""
    from llm_internals.models import DecoderLM, ModelConfig
    from llm_internals.training.backprop.gpt import model_gradients

    torch.manual_seed(0)
    config = ModelConfig(
        family="gpt2",
        vocab_size=65,
        d_model=128,
        n_layers=4,
        n_heads=4,
        max_seq_len=64,
        position="learned",
        norm="layernorm",
        norm_eps=1e-5,
        ffn="mlp",
        activation="gelu_tanh",
        tie_embeddings=True,
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
    )
    model = DecoderLM(config)
    x = torch.randint(0, 65, (12, 64))
    y = torch.randint(0, 65, (12, 64))

    def autograd_step() -> None:
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits.view(-1, 65), y.view(-1)).backward()

    fast = DecoderLM(config.replace(attn_impl="sdpa", fused_ops=True))
    fast.load_state_dict(model.state_dict())

    def autograd_fast_step() -> None:
        fast.zero_grad(set_to_none=True)
        F.cross_entropy(fast(x).view(-1, 65), y.view(-1)).backward()

    ms = interleaved(
        {
            "hand": lambda: model_gradients(model, x, y),
            "autograd": autograd_step,
            "autograd_fast": autograd_fast_step,
        },
        args.rounds,
    )
    table = Table(title="forward + backward, 4-layer 128-dim GPT-2, batch 12 x 64, float32")
    for column in ("method", "ms", "time / hand-written time"):
        table.add_column(column, justify="right")
    table.add_row("hand-written backward (training/backprop)", f"{ms['hand']:.1f}", "1.00x")
    table.add_row(
        "autograd, written-out model",
        f"{ms['autograd']:.1f}",
        f"{ms['autograd'] / ms['hand']:.2f}x",
    )
    table.add_row(
        "autograd, SDPA + fused ops",
        f"{ms['autograd_fast']:.1f}",
        f"{ms['autograd_fast'] / ms['hand']:.2f}x",
    )
    console.print(table)


def plot(curves: dict[str, list[tuple[int, float]]], title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in curves.items():
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            label=label,
            marker="o" if len(points) < 30 else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    console.print(f"wrote {path}")


def optimizers(args: argparse.Namespace) -> None:
    """AdamW vs Muon(+AdamW for embeddings, head, vectors): same model init, same batches."""
    curves, table_rows = {}, []
    for name, changes in (
        ("AdamW lr 1e-3", {"optimizer": "adamw"}),
        ("Muon lr 0.02 + AdamW lr 1e-3", {"optimizer": "muon"}),
    ):
        config = char_config(
            out_dir=f"{args.out_dir}/{changes['optimizer']}",
            max_steps=args.steps,
            eval_interval=max(args.steps // 6, 1),
            sample_interval=0,
            checkpoint_interval=0,
            warmup_steps=min(100, args.steps // 10),
            **changes,
        )
        result = run_training(config, show_progress=False)
        curves[f"{name} (val)"] = [
            (r["step"], r["val_loss"]) for r in result.history if "val_loss" in r
        ]
        table_rows.append((name, result.final_loss, result.final_val_loss, result.elapsed_s))
    table = Table(title=f"AdamW vs Muon, shakespeare-char model, {args.steps} steps x 768 tokens")
    for column in ("optimizer", "final train-batch loss", "final val loss", "wall s"):
        table.add_column(column, justify="right")
    for name, loss, val, secs in table_rows:
        table.add_row(name, f"{loss:.4f}", f"{val:.4f}", f"{secs:.0f}")
    console.print(table)
    plot(
        curves,
        f"AdamW vs Muon: char-level Shakespeare, {args.steps} steps",
        "val loss (nats/char)",
        FIGURES / "adamw_vs_muon.png",
    )


def char(args: argparse.Namespace) -> None:
    """nanoGPT's small CPU config; nanoGPT reports val loss ~1.88 after 2000 iterations."""
    config = char_config(out_dir=args.out_dir, max_steps=args.max_steps or 2000)
    result = run_training(config)
    console.print(
        f"shakespeare-char: {result.steps} steps, final val loss "
        f"{result.final_val_loss:.4f}, wall {result.elapsed_s:.0f} s, "
        f"{result.tokens_per_s:,.0f} tokens/s (including evaluation)"
    )


def bpe(args: argparse.Namespace) -> None:
    """The 6-layer/384-dim BPE model, stopped on the clock after --minutes."""
    config = TrainConfig.load(ROOT / "configs" / "shakespeare-bpe.toml").with_overrides(
        {
            "out_dir": args.out_dir,
            "max_minutes": float(args.minutes),
            **({"max_steps": args.max_steps} if args.max_steps else {}),
        }
    )
    result = run_training(config)
    losses = [(r["step"], r["loss"]) for r in result.history if "loss" in r]
    vals = [(r["step"], r["val_loss"]) for r in result.history if "val_loss" in r]
    console.print(
        f"bpe 6x384: {result.steps} steps in {result.elapsed_s / 60:.1f} min, final val "
        f"loss {result.final_val_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s"
    )
    plot(
        {"train (logged steps)": losses, "validation": vals},
        f"6-layer/384-dim GPT on BPE Shakespeare: {result.steps} steps, "
        f"{result.elapsed_s / 60:.0f} min on 2 CPU cores",
        "loss (nats/token)",
        FIGURES / "bpe_6x384_loss.png",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("part", choices=("throughput", "backprop", "optimizers", "char", "bpe"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300, help="optimizers: steps per run")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=30.0, help="bpe: wall-clock budget")
    parser.add_argument("--out-dir", default="out/bench-training")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    globals()[args.part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
