"""What a training run is made of, built from its TrainConfig: the model and the optimizer.

The model config is checked before anything is allocated: `model_config` validates the
`[model]` table (with a stand-in vocabulary, so a bad field fails before the corpus is read),
and `build_model` first builds the model on the meta device and compares its size with the
machine's memory (16 bytes per parameter: weights, gradients and two AdamW moments).
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import check_fits_in_memory
from llm_internals.training.adamw import AdamW
from llm_internals.training.config import TrainConfig
from llm_internals.training.muon_adamw import MuonWithAdamW


def model_config(config: TrainConfig, vocab_size: int) -> ModelConfig:
    """The ModelConfig of config.model (context defaults to block_size; fast: fused kernels)."""
    fields = {"max_seq_len": config.block_size, **config.model, "vocab_size": vocab_size}
    if config.fast:  # fused kernels; a model table asking for flash attention keeps it
        fields.update(fused_ops=True)
        if fields.get("attn_impl") != "flash":
            fields["attn_impl"] = "sdpa"
    return ModelConfig.from_dict(fields, source="train config, model table")


def build_model(config: TrainConfig, vocab_size: int) -> DecoderLM:
    """The DecoderLM described by config.model (context defaults to block_size), seeded."""
    shape = model_config(config, vocab_size)
    with torch.device("meta"):  # sizes first: weights, gradients and two AdamW moments
        check_fits_in_memory(DecoderLM(shape), "train config", bytes_per_param=16)
    torch.manual_seed(config.seed)
    return DecoderLM(shape)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> tuple[Any, list[float]]:
    """The optimizer and each param group's peak lr (the schedule scales them together).

    AdamW: weight decay on matrices only (norm gains and biases are not decayed, as in GPT-2
    and nanoGPT). Muon: hidden matrices get Muon at muon_lr, the rest AdamW at lr.
    """
    betas = (config.beta1, config.beta2)
    if config.optimizer == "muon":
        optimizer = MuonWithAdamW(
            model,
            muon_lr=config.muon_lr,
            adamw_lr=config.lr,
            muon_kwargs={"weight_decay": config.weight_decay},
            adamw_kwargs={"betas": betas, "weight_decay": 0.0},
        )
        base_lrs = [
            config.muon_lr if opt is optimizer.muon else config.lr
            for opt in optimizer.optimizers
            for _ in opt.param_groups
        ]
        return optimizer, base_lrs
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=config.lr, betas=betas), [config.lr, config.lr]
