"""The decoder families' HF converter: config fields (hf_decoder_config.py) and tensor names
(hf_decoder_tensors.py), gathered as the module interface hf.py expects."""

from llm_internals.models.hf_decoder_config import (
    ARCHITECTURES,
    LLAMA_LIKE,
    config_from_hf,
    config_to_hf,
    export_family,
)
from llm_internals.models.hf_decoder_tensors import TensorMap, normalize_hf_names, tensor_maps

__all__ = [
    "ARCHITECTURES",
    "LLAMA_LIKE",
    "TensorMap",
    "config_from_hf",
    "config_to_hf",
    "export_family",
    "normalize_hf_names",
    "tensor_maps",
]
