"""Training configuration: one flat dataclass, loaded from TOML, overridable field by field.

A config file has top-level training fields and a `[model]` table of ModelConfig fields
(vocab_size is taken from the tokenizer):

    max_steps = 2000
    lr = 1e-3
    [model]
    d_model = 128

Without a `[model]` table the model is DEFAULT_MODEL (nanoGPT's 4-layer character GPT); a
`[model]` table replaces it as a whole. Every field has a command-line flag (`--max-steps 500`,
`--lr 3e-4`), and `--set model.d_ff=256` overrides one model field. Unknown keys are errors
that name the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_text

# The model of configs/shakespeare-char.toml (nanoGPT's CPU model: a 4-layer, 4-head, 128-dim
# GPT-2), so `llm-internals train` with no config trains something sensible.
DEFAULT_MODEL = {"family": "gpt2", "d_model": 128, "n_layers": 4, "n_heads": 4,
                 "position": "learned", "norm": "layernorm", "norm_eps": 1e-5, "ffn": "mlp",
                 "activation": "gelu", "tie_embeddings": True}  # fmt: skip
MAX_CONFIG_BYTES = 1024 * 1024  # a TOML config is a few hundred bytes; refuse a huge file at once
KEEP_CHECKPOINTS = 2  # step-* folders a run keeps by default (the newest)
OPTIMIZERS = ("adamw", "muon")
DTYPES = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the corpus text itself.

    tokenizer: "char" (train a CharTokenizer), "bpe" (train byte-level BPE with
    bpe_vocab_size) or a path to a saved tokenizer. dtype "bfloat16" runs forward and loss
    under CPU autocast (weights and optimizer state stay float32). fast: use torch's fused
    attention (SDPA), norms and activations instead of the written-out ones (same math); a
    model table with attn_impl = "flash" keeps the tiled flash attention.
    Intervals of 0 turn the periodic action off (checkpoints are still written at the end).
    max_minutes > 0 stops the run on the clock (evaluating and saving at that step) even before
    max_steps, which still sets the length of the cosine schedule. threads > 0 sets torch's
    intra-op thread count (0 keeps torch's default); on a CPU shared with other processes 1
    thread per process can be many times faster than spin-waiting threads.
    keep_checkpoints: how many step-* checkpoints a run folder keeps (the newest; 0 keeps all).
    moe_*: for models with MoE layers only (training/moe_terms.py): the objective is
    CE + moe_aux_loss_coef * Switch aux loss + moe_z_loss_coef * router z-loss (both averaged
    over MoE layers; Switch's 1e-2 and ST-MoE's 1e-3), and moe_bias_update_rate = gamma > 0
    moves each router's selection bias by gamma * sign(mean load - load) after every step
    (DeepSeek-V3's auxiliary-loss-free balancing, gamma = 1e-3 there).
    warmup_from_zero: warm up as lr = lr * step / warmup_steps (0 at step 0, the peak at
    step == warmup_steps) instead of lr * (step + 1) / warmup_steps (the peak one step earlier).
    """

    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))
    corpus: str = "shakespeare"
    tokenizer: str = "char"
    bpe_vocab_size: int = 4096
    val_fraction: float = 0.1
    out_dir: str = "out/train"
    batch_size: int = 12
    block_size: int = 64
    grad_accum: int = 1
    max_steps: int = 2000
    max_minutes: float = 0.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    warmup_from_zero: bool = False
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    muon_lr: float = 0.02
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    sample_interval: int = 0
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    checkpoint_interval: int = 0
    keep_checkpoints: int = KEEP_CHECKPOINTS
    seed: int = 1337
    dtype: str = "float32"
    fast: bool = True
    threads: int = 0
    moe_aux_loss_coef: float = 0.01
    moe_z_loss_coef: float = 0.001
    moe_bias_update_rate: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("batch_size", "block_size", "grad_accum", "bpe_vocab_size", "eval_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LLMInternalsError(
                    f"train config: {name} must be a positive integer, got {value!r}"
                )
        for name in (
            "max_steps",
            "warmup_steps",
            "eval_interval",
            "log_interval",
            "sample_interval",
            "sample_tokens",
            "checkpoint_interval",
            "keep_checkpoints",
            "seed",
            "threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LLMInternalsError(
                    f"train config: {name} must be an integer >= 0, got {value!r}"
                )
        for name in ("lr", "min_lr", "weight_decay", "muon_lr", "grad_clip", "max_minutes",
                     "val_fraction", "beta1", "beta2", "moe_aux_loss_coef", "moe_z_loss_coef",
                     "moe_bias_update_rate"):  # fmt: skip
            value = getattr(self, name)
            # NaN fails every comparison, so `value < 0` alone would let it (and inf) through.
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise LLMInternalsError(
                    f"train config: {name} must be a finite number >= 0, got {value!r}",
                    hint=f"pass e.g. --{name.replace('_', '-')} {_default_of(name)!r}",
                )
        if self.min_lr > self.lr:
            raise LLMInternalsError(
                f"train config: min_lr={self.min_lr} is above lr={self.lr}",
                hint="min_lr is the floor the cosine schedule decays to",
            )
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise LLMInternalsError(
                    f"train config: {name} must be in [0, 1), got {getattr(self, name)!r}"
                )
        if not 0.0 < self.val_fraction < 1.0:
            raise LLMInternalsError(
                f"train config: val_fraction must be in (0, 1), got {self.val_fraction!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise LLMInternalsError(
                f"train config: unknown optimizer {self.optimizer!r}",
                hint=f"use one of {', '.join(OPTIMIZERS)}",
            )
        if self.dtype not in DTYPES:
            raise LLMInternalsError(
                f"train config: unknown dtype {self.dtype!r}",
                hint=f"use one of {', '.join(DTYPES)}",
            )
        for name in ("fast", "warmup_from_zero"):
            if not isinstance(getattr(self, name), bool):
                raise LLMInternalsError(
                    f"train config: {name} must be true or false, got {getattr(self, name)!r}"
                )
        for name in ("corpus", "tokenizer", "out_dir", "sample_prompt"):
            if not isinstance(getattr(self, name), str):
                raise LLMInternalsError(
                    f"train config: {name} must be a string, got {getattr(self, name)!r}"
                )
        if not isinstance(self.model, dict):
            raise LLMInternalsError(
                f"train config: model must be a table of ModelConfig fields, got {self.model!r}"
            )
        if "vocab_size" in self.model:
            raise LLMInternalsError(
                "train config: the model table must not set vocab_size",
                hint="it comes from the tokenizer",
            )

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step of one process (times the world size under DDP)."""
        return self.batch_size * self.block_size * self.grad_accum

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LLMInternalsError(
                f"{source}: unknown key(s) {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(known))}",
            )
        for f in dataclasses.fields(cls):
            if f.name in data and f.name != "model":
                data = {**data, f.name: _coerce(f.name, data[f.name], _default(f), source)}
        try:
            return cls(**data)
        except LLMInternalsError as err:  # validate() does not know the file
            raise LLMInternalsError(
                f"{source}: {err.message.removeprefix('train config: ')}", err.hint
            ) from None

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        text = read_text(path, "train config file (TOML)", max_bytes=MAX_CONFIG_BYTES)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise LLMInternalsError(f"{path}: invalid TOML ({err})") from None
        return cls.from_dict(data, source=str(path))

    def with_overrides(
        self, overrides: dict[str, Any], source: str = "command line"
    ) -> TrainConfig:
        """A copy with fields replaced; "model.<name>" keys replace model fields."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key.startswith("model."):
                data["model"] = {**data["model"], key.removeprefix("model."): value}
            else:
                data[key] = value
        return TrainConfig.from_dict(data, source=source)


# Fields a resumed run cannot change: the checkpoint's model, tokenizer and data were made with
# them, so a new value would be ignored (model, tokenizer) or train on different data.
FIXED_ON_RESUME = ("corpus", "tokenizer", "bpe_vocab_size", "val_fraction", "block_size",
                   "optimizer")  # fmt: skip


def check_resume_config(saved: TrainConfig, config: TrainConfig, step: int) -> None:
    """Refuse a resume `config` that changes what the saved run was built with, or whose
    max_steps lies before the checkpoint's `step`."""
    changed = [f"--{name.replace('_', '-')} {getattr(config, name)!r}" for name in FIXED_ON_RESUME
               if getattr(config, name) != getattr(saved, name)]  # fmt: skip
    keys = sorted(set(saved.model) | set(config.model))
    changed += [
        f"--set model.{key}={config.model.get(key)!r}"
        for key in keys
        if saved.model.get(key) != config.model.get(key)
    ]
    if changed:
        raise LLMInternalsError(
            f"resume cannot change {', '.join(changed)}: the checkpoint's model, tokenizer and "
            "data were made with the saved values",
            hint="drop these flags to continue the run, or start a new run with --out-dir NEW",
        )
    if config.max_steps < step:
        raise LLMInternalsError(
            f"--max-steps {config.max_steps} is below the checkpoint's step {step}",
            hint=f"pass --max-steps {step} or more to continue the run",
        )


def _default_of(name: str) -> Any:
    return next(_default(f) for f in dataclasses.fields(TrainConfig) if f.name == name)


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """TOML and the command line give ints where floats are meant (lr = 1): accept those."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise LLMInternalsError(f"{source}: {name} must be {type(default).__name__}, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """A command-line `--set key=value` value: TOML syntax (1e-3, true, "text"), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
