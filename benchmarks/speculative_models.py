"""The two models of benchmarks/speculative.py: a target and a draft, trained once and cached.

Both are GPT-2-style decoders trained with the project's Trainer on the default corpus
(Shakespeare) with one byte-level BPE tokenizer trained on its training split, so the draft's
token ids mean what the target's mean (speculation needs a shared vocabulary):

    target  d_model 768 (GPT-2-small width), 4 layers, 12 heads      31.6 M parameters
    draft   d_model 256, 2 layers, 4 heads                           2.7 M parameters

Training budget: what 2 shared CPU cores do in about half an hour (bf16 autocast, Muon on the
hidden matrices, 1 torch thread; the target 100 steps of 8 x 128 tokens, the draft up to 600
steps of 16 x 128 tokens, each also stopped by its `max_minutes` clock). Measured while other
work loaded the cores (load average 7-10, under `nice -n 19`): target 23 minutes to validation
loss 5.29, draft 172 steps in its 8 minutes to 4.84 (docs/benchmarks.md).

Cache: `<cache-dir>/<role>-<hash>/` holds our checkpoint (config.json + safetensors),
tokenizer.json and train.json (steps, losses, seconds); `<role>-<hash>-hf/` the same weights
written by `models.save_pretrained`, which `transformers.AutoModelForCausalLM` loads (the HF
reference of the benchmark). <hash> is a SHA-256 of everything that decides the weights (the
training config, the corpus slice, the tokenizer size, CACHE_VERSION), so a changed config
trains again instead of reusing stale weights. The clock (`max_minutes`) is not in the hash: a
run it stopped early is cached as it is, and train.json records the steps it reached. The
default cache dir is $LLM_INTERNALS_HOME/speculative (~/.cache/llm-internals/speculative),
never the repository. `draft-distilled-<hash>/` is the draft distilled from the target
(speculative_distill.py; its hash includes both parents' hashes), the benchmark's default draft.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_internals.console import console
from llm_internals.data import corpus
from llm_internals.data.corpus import corpus_home
from llm_internals.files import write_json
from llm_internals.models import DecoderLM, save_checkpoint, save_pretrained
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import prepare_data
from llm_internals.training.trainer import Trainer, build_model

CACHE_VERSION = 1  # bump when the training code changes in a way the config does not show
GPT2_BLOCK = {
    "family": "gpt2",
    "position": "learned",
    "norm": "layernorm",
    "norm_eps": 1e-5,
    "ffn": "mlp",
    "activation": "gelu",
    "tie_embeddings": True,
    "qkv_bias": True,
    "attn_out_bias": True,
    "mlp_bias": True,
}  # fmt: skip (HF GPT-2 has biases)
COMMON = {
    "corpus": "shakespeare",
    "tokenizer": "bpe",
    "optimizer": "muon",
    "lr": 2e-3,
    "min_lr": 2e-4,
    "warmup_steps": 30,
    "eval_interval": 50,
    "eval_iters": 5,
    "log_interval": 10,
    "sample_interval": 0,
    "checkpoint_interval": 0,
    "keep_checkpoints": 1,
    "dtype": "bfloat16",
    "threads": 1,
}


@dataclass(frozen=True)
class ModelPlan:
    """How one of the two models is made: its training config and the corpus slice it sees
    (0 = the whole corpus; the quick mode trains on the first characters only)."""

    role: str
    config: TrainConfig
    corpus_chars: int = 0
    parents: tuple[str, ...] = ()  # keys of the models it starts from (distillation)

    def key(self) -> str:
        """Hash of everything that decides the trained weights."""
        fields = self.config.to_dict()
        for volatile in ("out_dir", "threads", "max_minutes"):
            fields.pop(volatile, None)
        blob = json.dumps(
            {"v": CACHE_VERSION, "role": self.role, "chars": self.corpus_chars, "train": fields}
            | ({"parents": list(self.parents)} if self.parents else {}),
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def full_plans() -> tuple[ModelPlan, ModelPlan]:
    """The benchmark's models (about 25 + 8 minutes on 2 loaded CPU cores)."""
    base = {**COMMON, "bpe_vocab_size": 4096, "block_size": 128, "batch_size": 16}
    target = TrainConfig(
        model={**GPT2_BLOCK, "d_model": 768, "n_layers": 4, "n_heads": 12},
        max_steps=100,
        max_minutes=40.0,
        **{**base, "batch_size": 8},  # Muon's ~1.5 CPU-s per step at this width is fixed:
        # smaller batches buy more steps (Muon's per-step gain) for the same minutes
    )
    draft = TrainConfig(
        model={**GPT2_BLOCK, "d_model": 256, "n_layers": 2, "n_heads": 4},
        max_steps=600,
        max_minutes=8.0,
        **base,
    )
    return ModelPlan("target", target), ModelPlan("draft", draft)


def quick_plans() -> tuple[ModelPlan, ModelPlan]:
    """Tiny models on the first 200k characters for a smoke test (seconds, not minutes)."""
    base = {**COMMON, "bpe_vocab_size": 384, "block_size": 64, "batch_size": 8,
            "warmup_steps": 5, "eval_interval": 0, "eval_iters": 2}  # fmt: skip
    target = TrainConfig(
        model={**GPT2_BLOCK, "d_model": 64, "n_layers": 2, "n_heads": 4}, max_steps=25, **base
    )
    draft = TrainConfig(
        model={**GPT2_BLOCK, "d_model": 32, "n_layers": 1, "n_heads": 2}, max_steps=25, **base
    )
    return ModelPlan("target", target, 200_000), ModelPlan("draft", draft, 200_000)


def distill_plan(target: CachedModel, draft: CachedModel, quick: bool = False) -> ModelPlan:
    """The draft distilled from the target (benchmarks/speculative_distill.py), starting from
    the plainly trained draft: 150 steps of 16 x 128 tokens (quick: 10 steps of 8 x 64)."""
    plan = (quick_plans if quick else full_plans)()[1]
    steps = {"max_steps": 10, "warmup_steps": 2} if quick else {"max_steps": 150,
                                                                "max_minutes": 12.0}  # fmt: skip
    config = plan.config.replace(eval_iters=2 if quick else 5, **steps)
    return ModelPlan("draft-distilled", config, plan.corpus_chars,
                     (target.info["key"], draft.info["key"]))  # fmt: skip


def default_cache_dir() -> Path:
    return corpus_home() / "speculative"


@dataclass
class CachedModel:
    """A trained model on disk: our checkpoint folder, its HF export and what training said."""

    role: str
    path: Path
    hf_path: Path
    info: dict[str, Any]

    def load(self) -> tuple[DecoderLM, Any]:
        loaded = load_model_and_tokenizer(self.path)
        return loaded.model, loaded.tokenizer


def ensure_model(
    plan: ModelPlan,
    cache_dir: Path,
    show_progress: bool = True,
    teacher: CachedModel | None = None,
    student: CachedModel | None = None,
) -> CachedModel:
    """The cached model of `plan`, trained (and exported for HF) first if it is not there;
    with `teacher` and `student`, the student distilled from the teacher instead."""
    folder = cache_dir / f"{plan.role}-{plan.key()}"
    hf_folder = folder.with_name(folder.name + "-hf")
    info_path = folder / "train.json"
    if info_path.exists() and (hf_folder / "config.json").exists():
        return CachedModel(plan.role, folder, hf_folder, json.loads(info_path.read_text()))
    config = plan.config.replace(out_dir=str(cache_dir / "shared"))  # tokenizer + token files
    text = corpus(config.corpus)
    if plan.corpus_chars:
        text = text[: plan.corpus_chars]
    if config.threads:
        torch.set_num_threads(config.threads)
    tokenizer, splits = prepare_data(config, text=text)
    if teacher is not None and student is not None:
        return _distilled(plan, config, teacher, student, splits, folder, hf_folder)
    model = build_model(config, tokenizer.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"Training the {plan.role} ({model.config.n_layers} layers x {model.config.d_model}, "
        f"{n_params:,} parameters) on {len(splits.train):,} BPE tokens: up to "
        f"{config.max_steps} steps of {config.tokens_per_step:,} tokens"
        + (f", at most {config.max_minutes:g} min" if config.max_minutes else "")
        + f"; cached in {folder}"
    )
    started = time.perf_counter()
    run_dir = folder.with_name(folder.name + "-run")
    trainer = Trainer(config, model, tokenizer, splits, run_dir=run_dir, console=console,
                      show_progress=show_progress, device="cpu")  # fmt: skip
    result = trainer.train()
    model.eval()
    info = {
        "role": plan.role,
        "key": plan.key(),
        "parameters": n_params,
        "steps": result.steps,
        "max_steps": result.max_steps,
        "stop_reason": result.stop_reason,
        "final_train_loss": result.final_loss,
        "final_val_loss": result.final_val_loss,
        "val_losses": [[r["step"], r["val_loss"]] for r in result.history if "val_loss" in r],
        "train_seconds": time.perf_counter() - started,
        "train_tokens": len(splits.train),
        "model": model.config.to_dict(),
    }
    return _save(plan.role, model, tokenizer, folder, hf_folder, info)


def _save(role: str, model: DecoderLM, tokenizer: Any, folder: Path, hf_folder: Path,
          info: dict[str, Any]) -> CachedModel:  # fmt: skip
    save_checkpoint(model, folder)
    tokenizer.save(folder / "tokenizer.json")
    save_pretrained(model, hf_folder, tokenizer=tokenizer)
    write_json(folder / "train.json", info)  # last: its presence says the folder is complete
    return CachedModel(role, folder, hf_folder, info)


def _distilled(plan: ModelPlan, config: TrainConfig, teacher: CachedModel, student: CachedModel,
               splits: Any, folder: Path, hf_folder: Path) -> CachedModel:  # fmt: skip
    from speculative_distill import distill

    target, _ = teacher.load()
    model, tokenizer = student.load()
    console.print(f"Distilling the draft from the target (KL loss), up to {config.max_steps} "
                  f"steps of {config.tokens_per_step:,} tokens; cached in {folder}")  # fmt: skip
    result = distill(model, target, splits, config)
    info = {"role": plan.role, "key": plan.key(), "parents": list(plan.parents),
            "parameters": student.info["parameters"], "steps": result["steps"],
            "max_steps": config.max_steps, "final_val_loss": result["after"]["val_loss"],
            "distillation": result, "train_seconds": result["seconds"],
            "model": model.config.to_dict()}  # fmt: skip
    return _save(plan.role, model, tokenizer, folder, hf_folder, info)
