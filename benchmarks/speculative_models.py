"""The two models of benchmarks/speculative.py: a target and a draft, trained once and cached.

Both are GPT-2-style decoders trained with the project's Trainer on the default corpus
(Shakespeare) with one byte-level BPE tokenizer trained on its training split, so the draft's
token ids mean what the target's mean (speculation needs a shared vocabulary):

    target  d_model 768 (GPT-2-small width), 4 layers, 12 heads      ~34 M parameters
    draft   d_model 256, 2 layers, 4 heads                           ~2.6 M parameters

Training budget: what 2 shared CPU cores do in about 20-25 minutes (bf16 autocast, Muon on the
hidden matrices, 1 torch thread per process; each run also stops on its `max_minutes` clock).

Cache: `<cache-dir>/<role>-<hash>/` holds our checkpoint (config.json + safetensors),
tokenizer.json and train.json (steps, losses, seconds); `<role>-<hash>-hf/` the same weights
written by `models.save_pretrained`, which `transformers.AutoModelForCausalLM` loads (the HF
reference of the benchmark). <hash> is a SHA-256 of everything that decides the weights (the
training config, the corpus slice, the tokenizer size, CACHE_VERSION), so a changed config
trains again instead of reusing stale weights. The default cache dir is
$LLM_INTERNALS_HOME/speculative (~/.cache/llm-internals/speculative), never the repository.
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

    def key(self) -> str:
        """Hash of everything that decides the trained weights."""
        fields = self.config.to_dict()
        for volatile in ("out_dir", "threads", "max_minutes"):
            fields.pop(volatile, None)
        blob = json.dumps(
            {"v": CACHE_VERSION, "role": self.role, "chars": self.corpus_chars, "train": fields},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def full_plans() -> tuple[ModelPlan, ModelPlan]:
    """The benchmark's models (trained for about 20 + 5 minutes on 2 shared CPU cores)."""
    base = {**COMMON, "bpe_vocab_size": 4096, "block_size": 128, "batch_size": 16}
    target = TrainConfig(
        model={**GPT2_BLOCK, "d_model": 768, "n_layers": 4, "n_heads": 12},
        max_steps=100,
        max_minutes=40.0,
        **{**base, "batch_size": 8},  # Muon's step (~1.5 CPU-s at this width) does not grow
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


def ensure_model(plan: ModelPlan, cache_dir: Path, show_progress: bool = True) -> CachedModel:
    """The cached model of `plan`, trained (and exported for HF) first if it is not there."""
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
    save_checkpoint(model, folder)
    tokenizer.save(folder / "tokenizer.json")
    save_pretrained(model, hf_folder, tokenizer=tokenizer)
    write_json(info_path, info)  # last: its presence says the folder is complete
    return CachedModel(plan.role, folder, hf_folder, info)
