"""Transformer models: one config, the decoder-only LM, checkpoints and HF import/export."""

from llm_internals.models.checkpoint import load_checkpoint, save_checkpoint
from llm_internals.models.config import ModelConfig
from llm_internals.models.decoder import DecoderBlock, DecoderLM
from llm_internals.models.hf import load_pretrained, save_pretrained
from llm_internals.models.params import count_model_parameters, count_parameters

__all__ = [
    "DecoderBlock",
    "DecoderLM",
    "ModelConfig",
    "count_model_parameters",
    "count_parameters",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
    "save_pretrained",
]
