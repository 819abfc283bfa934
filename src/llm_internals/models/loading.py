"""From a folder path to a model and its tokenizer: the one loader every command and engine uses.

Accepted folders (`--model PATH` alone is enough for each):
    a checkpoint folder       config.json + safetensors (ours, or an HF export / HF download)
    a training run folder     its `latest` file names the newest step-* folder
    a step-* folder           written by the trainer (config.json, model.safetensors, state)
    the tour's saved model    out/tour/model (tokenizer.json beside the weights)

The tokenizer is the folder's tokenizer.json, or else the one in the run folder above it (a
step folder of an older run), unless a file is given explicitly. The end-of-text id comes from
an HF config.json's eos_token_id when it has one, else "auto" (the tokenizer's).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.files import read_json, read_text

LATEST_FILE = "latest"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STEP_NAME = re.compile(r"step-\d{8}")  # the folders a run's `latest` may name


class LoadedModel(NamedTuple):
    """What `load_model_and_tokenizer` returns (unpacks as model, tokenizer, eos)."""

    model: torch.nn.Module
    tokenizer: Any | None
    eos_token_id: Any


def resolve_model_directory(path: str | Path) -> Path:
    """The folder holding config.json: `path` itself, or the step folder a run's `latest` names."""
    path = Path(path)
    if not path.exists():
        raise LLMInternalsError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise LLMInternalsError(
            f"{path} is a file; --model takes a folder",
            hint="pass the checkpoint folder that holds config.json",
        )
    if (path / CONFIG_FILE).exists():
        return path
    latest = path / LATEST_FILE
    if latest.exists():
        name = read_text(latest, "latest file", max_bytes=1024).strip()
        if not STEP_NAME.fullmatch(name):
            raise LLMInternalsError(
                f"{latest} names {name[:80]!r}, not a step-NNNNNNNN folder",
                hint="the run folder is damaged; pass one of its step-* folders",
            )
        target = path / name
        if not (target / CONFIG_FILE).exists():
            raise LLMInternalsError(
                f"{latest} names {target.name}, which has no {CONFIG_FILE}",
                hint="the run folder is damaged; pass one of its step-* folders",
            )
        return target
    raise LLMInternalsError(
        f"{path} has no {CONFIG_FILE} and no {LATEST_FILE} file",
        hint="pass a checkpoint folder (ours or HF), a step-* folder or a training run folder",
    )


def find_tokenizer_file(directory: Path) -> Path | None:
    """tokenizer.json in the model folder, or in the run folder just above a step folder."""
    for folder in (directory, directory.parent):
        candidate = folder / TOKENIZER_FILE
        if candidate.is_file():
            return candidate
        if folder is directory and not (directory.parent / LATEST_FILE).exists():
            break  # only a run folder's tokenizer belongs to its step folders
    return None


def load_tokenizer(path: str | Path) -> Any:
    """A saved tokenizer: our character format, or anything `Tokenizer.load` reads (our BPE
    JSON, HF tokenizer.json, a tiktoken rank file)."""
    from llm_internals.tokenizer import Tokenizer
    from llm_internals.tokenizer.char import FORMAT_NAME as CHAR_FORMAT
    from llm_internals.tokenizer.char import CharTokenizer

    path = Path(path)
    if not path.exists():
        raise LLMInternalsError(f"tokenizer file {path} does not exist")
    if path.suffix == ".json":
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("format") == CHAR_FORMAT:
                return CharTokenizer.load(path)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass  # Tokenizer.load reports what is wrong with the file
    return Tokenizer.load(path)


def eos_from_config(directory: Path) -> Any:
    """An HF config.json's eos_token_id (int or list); "auto" (the tokenizer's) otherwise."""
    try:
        config = read_json(directory / CONFIG_FILE, "config file")
    except LLMInternalsError:
        return "auto"
    eos = config.get("eos_token_id")
    return eos if isinstance(eos, (int, list)) and not isinstance(eos, bool) else "auto"


def load_model_and_tokenizer(
    model_path: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    allow_seq2seq: bool = False,
    require_tokenizer: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load any folder the project or HF writes, with its tokenizer, ready for inference.

    The model is in eval mode with the fast kernels on (sdpa attention, fused ops), moved to
    `device` (default: CPU) and cast to `dtype` when given. `tokenizer` is None when the folder
    has none and `require_tokenizer` is False.
    """
    from llm_internals.models.hf import load_pretrained
    from llm_internals.models.quantized_checkpoint import (
        is_quantized_checkpoint,
        load_quantized_checkpoint,
    )

    directory = resolve_model_directory(model_path)
    if tokenizer_path is not None:
        tokenizer_file: Path | None = Path(tokenizer_path)
        if not tokenizer_file.exists():
            raise LLMInternalsError(f"tokenizer file {tokenizer_file} does not exist")
    else:
        tokenizer_file = find_tokenizer_file(directory)
    if tokenizer_file is None and require_tokenizer:
        raise LLMInternalsError(
            f"no tokenizer: {directory / TOKENIZER_FILE} does not exist",
            hint="pass --tokenizer FILE (our JSON, an HF tokenizer.json or a tiktoken file)",
        )
    if is_quantized_checkpoint(directory):  # written by `llm-internals quantize`
        model = load_quantized_checkpoint(directory, device, dtype)
        model.set_attn_impl("sdpa")
        model.set_fused_ops(True)
        device = dtype = None  # done: a later .to(dtype) would cast the float8 codes too
    else:
        model = load_pretrained(directory, attn_impl="sdpa", fused_ops=True)
    is_decoder = hasattr(model, "hidden_states")
    if not is_decoder and not (
        allow_seq2seq and hasattr(model, "encode") and hasattr(model, "decode")
    ):
        raise LLMInternalsError(
            f"{directory} holds a {type(model).__name__}, not a decoder language model",
            hint="this works with GPT-2, Llama, Mistral, Qwen2, Qwen3 and our DecoderLM",
        )
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    model.eval()
    eos = eos_from_config(directory)
    if tokenizer_file is None:
        return LoadedModel(model, None, eos)
    tokenizer = load_tokenizer(tokenizer_file)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise LLMInternalsError(
            f"tokenizer {tokenizer_file} has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size}",
            hint="use the tokenizer the model was trained with (--tokenizer FILE)",
        )
    return LoadedModel(model, tokenizer, eos)
