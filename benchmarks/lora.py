"""LoRA and QLoRA: what they save and what they cost, with PEFT beside us in the same run.

    python benchmarks/lora.py            # tour-size base, 200 fine-tuning steps per method
    python benchmarks/lora.py --quick    # a smoke run (a few steps; figures meaningless)

1. Memory: trainable parameters and bytes of weights, gradients and AdamW states
   (adapters.training_bytes) for full fine-tuning, LoRA r = 4, 8, 16 and QLoRA (r = 8, NF4 with
   double quantisation), on the tour-size model (configs/tour.toml's shape).
2. Quality: each method fine-tunes the same base for the same steps on the first 80% of the
   corpus part the base never saw (its validation split) and is validated on the last 20%.
   The base is the tour model trained here with configs/tour.toml (cached under
   $LLM_INTERNALS_HOME/lora/; --quick: 20 steps with a character tokenizer), or --model PATH.
3. Speed: tokens/s of a LoRA training step (r = 8 on q, k, v, o; forward, backward, torch AdamW)
   of our model and of PEFT on transformers' Llama, same HF weights, rounds alternating, medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import peft
import torch
import transformers
from rich.table import Table

from llm_internals.adapters import LoraSettings, inject_lora, training_bytes
from llm_internals.console import console
from llm_internals.data import corpus, train_val_split
from llm_internals.data.corpus import corpus_home
from llm_internals.models.hf import load_pretrained
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.training.config import TrainConfig
from llm_internals.training.finetune import FinetuneSpec, prepare_model
from llm_internals.training.finetune_run import run_finetune
from llm_internals.training.run import run_training

ROOT = Path(__file__).resolve().parents[1]
METHODS = [("full", None), ("lora", 4), ("lora", 8), ("lora", 16), ("qlora", 8)]


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def base_model(args) -> Path:
    """The tour model (configs/tour.toml), trained once and cached; --quick trains 20 steps."""
    if args.model:
        return Path(args.model)
    config = TrainConfig.load(ROOT / "configs" / "tour.toml")
    steps = 20 if args.quick else config.max_steps
    if args.quick:  # a character tokenizer: no BPE training for a smoke run
        config = config.replace(tokenizer="char")
    out = corpus_home() / "lora" / f"tour-base-{steps}-{config.tokenizer}"
    if not (out / "latest").exists():
        console.print(f"Training the base ({steps} steps of configs/tour.toml) into {out}")
        run_training(config.replace(out_dir=str(out), max_steps=steps, max_minutes=0),
                     show_progress=False, device="cpu")  # fmt: skip
    return out


def spec_for(method: str, r: int | None) -> FinetuneSpec:
    settings = LoraSettings(r=r or 8, alpha=2.0 * (r or 8))
    return FinetuneSpec(method=method, lora=settings, targets="all-linear")


def quality_and_memory(args, base: Path, work: Path) -> Table:
    text = corpus("shakespeare")
    _, held_out = train_val_split(text, 0.1)  # the part the base never trained on
    data = work / "held-out.txt"
    data.write_text(held_out[:20_000] if args.quick else held_out, encoding="utf-8")
    table = Table(title=f"Fine-tuning {base} for {args.steps} steps on held-out text")
    for column in ("method", "trainable", "weights MiB", "grads MiB", "Adam MiB", "total MiB",
                   "val loss before", "val loss after", "tokens/s"):  # fmt: skip
        table.add_column(column, justify="right")
    for method, r in METHODS:
        name = method if r is None else f"{method} r={r}"
        model = prepare_model(load_model_and_tokenizer(base).model, spec_for(method, r))
        counted = training_bytes(model)
        config = TrainConfig(corpus=str(data), out_dir=str(work / name.replace(" ", "-")),
                             val_fraction=0.2, batch_size=16, block_size=64,
                             max_steps=args.steps, lr=3e-4 if method == "full" else 2e-3,
                             min_lr=3e-5 if method == "full" else 2e-4, warmup_steps=10,
                             weight_decay=0.0, eval_interval=args.steps,
                             checkpoint_interval=0, keep_checkpoints=1, threads=args.threads,
                             eval_iters=2 if args.quick else 20)  # fmt: skip
        result = run_finetune(base, spec_for(method, r), config, show_progress=False)
        before = result.history[0]["val_loss"]  # step 0: the base itself
        mib = lambda n: f"{n / 2**20:.2f}"  # noqa: E731
        table.add_row(name, f"{counted.trainable_params:,}", mib(counted.weights),
                      mib(counted.gradients), mib(counted.adam_states), mib(counted.total),
                      f"{before:.4f}", f"{result.final_val_loss:.4f}",
                      f"{result.tokens_per_s:,.0f}")  # fmt: skip
    return table


def speed_vs_peft(args, work: Path) -> Table:
    """Training-step tokens/s, ours vs PEFT, on one random Llama (d 256, 4 layers)."""
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(
        vocab_size=4096,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=688,
        max_position_embeddings=256,
    )
    transformers.LlamaForCausalLM(hf_config).save_pretrained(work / "hf-llama")
    ours = load_pretrained(work / "hf-llama", attn_impl="sdpa", fused_ops=True)
    inject_lora(ours, LoraSettings(r=8, alpha=16), "q,k,v,o")
    theirs = transformers.LlamaForCausalLM.from_pretrained(work / "hf-llama")
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))  # fmt: skip
    batch, block = (2, 64) if args.quick else (8, 128)
    x = torch.randint(0, 4096, (batch, block + 1))
    sides = {
        "ours": (ours.train(), lambda m: m(x[:, :-1])),
        "peft": (theirs.train(), lambda m: m(input_ids=x[:, :-1]).logits),
    }
    optims = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
              for k, (m, _) in sides.items()}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in sides}
    rounds, steps = (2, 1) if args.quick else (7, 5)
    for _ in range(rounds):
        for key, (model, logits_of) in sides.items():
            start = time.perf_counter()
            for _ in range(steps):
                logits = logits_of(model)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
                optims[key].zero_grad()
                loss.backward()
                optims[key].step()
            times[key].append((time.perf_counter() - start) / steps)
    table = Table(title=f"LoRA r=8 (q,k,v,o) training step, batch {batch} x {block} tokens, "
                        f"{torch.get_num_threads()} threads")  # fmt: skip
    for column in ("side", "median s/step", "tokens/s", "ours / peft"):
        table.add_column(column, justify="right")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for key, median in medians.items():
        ratio = f"{medians['peft'] / medians['ours']:.2f}x" if key == "ours" else ""
        table.add_row(key, f"{median:.4f}", f"{batch * block / median:,.0f}", ratio)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per method")
    parser.add_argument("--model", help="base model folder (default: the cached tour model)")
    parser.add_argument("--out", default=str(corpus_home() / "lora" / "runs"), help="work dir")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: no spin-waiting on a shared CPU)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps = min(args.steps, 4)
    torch.manual_seed(0)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"load average before: {load_average()}")
    base = base_model(args)
    console.print(quality_and_memory(args, base, work), width=160)
    console.print(speed_vs_peft(args, work), width=160)
    console.print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
