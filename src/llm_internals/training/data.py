"""Training data: a corpus tokenized once into a memory-mapped token file, and random blocks.

Token file: the ids as a flat little-endian uint16 array (uint32 when the vocabulary has more
than 65,536 ids) in `<name>.bin`, with a JSON sidecar `<name>.json`:

    {"format": ..., "dtype": "uint16", "count": N, "tokenizer": <fingerprint>, "text": <sha256>}

The sidecar says which tokenizer and which text produced the file, so a changed tokenizer or
corpus rebuilds it instead of silently training on stale ids. np.memmap reads it lazily: a
corpus larger than memory costs nothing until a batch touches it.

Batches (nanoGPT-style): pick `batch_size` random start offsets i, take x = tokens[i : i + T]
and y = tokens[i + 1 : i + T + 1] (the next token at every position). The offsets come from a
torch.Generator owned by the sampler, so a seed fixes every batch, and its state (saved in
checkpoints) lets a resumed run draw exactly the batches the uninterrupted run would have drawn.
The generator stays on the CPU whatever `device` the batches go to, so a seed draws the same
batches on every machine; on CUDA the rows travel through pinned memory, without blocking.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.files import atomic_write, read_json, write_json

FORMAT_NAME = "llm-internals-tokens"
FORMAT_VERSION = 1


class TextTokenizer(Protocol):
    """What the trainer needs of a tokenizer (BPE `Tokenizer` and `CharTokenizer` both fit)."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 identifying a tokenizer's mapping (vocab, merges, specials, pattern)."""
    if hasattr(tokenizer, "fingerprint"):
        return tokenizer.fingerprint()
    digest = hashlib.sha256()
    for token_id in sorted(tokenizer.vocab):
        digest.update(f"{token_id}:".encode() + tokenizer.vocab[token_id] + b"\n")
    digest.update(repr(list(tokenizer.merges)).encode())
    digest.update(repr(sorted(tokenizer.special_tokens.items())).encode())
    digest.update(str(getattr(tokenizer, "pattern", "")).encode())
    return digest.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65,536 in half the bytes of uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_text(tokenizer: TextTokenizer, text: str) -> list[int]:
    """Ordinary text encoding (special-token strings in the corpus stay plain text)."""
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode
    return encode(text)


def build_token_file(text: str, tokenizer: TextTokenizer, path: str | Path) -> np.memmap:
    """Token ids of `text` at `path` (.bin + .json sidecar), rebuilt only when stale."""
    path = Path(path).with_suffix(".bin")
    sidecar = path.with_suffix(".json")
    expected = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "text": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        "dtype": token_dtype(tokenizer.vocab_size).name,
    }
    if path.exists() and sidecar.exists():
        meta = read_json(sidecar)
        if all(meta.get(key) == value for key, value in expected.items()):
            return load_token_file(path)
    ids = np.asarray(encode_text(tokenizer, text), dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
        raise LLMInternalsError(f"tokenizer produced ids outside [0, {tokenizer.vocab_size})")
    array = ids.astype(expected["dtype"])
    atomic_write(path, lambda tmp: array.tofile(tmp))
    write_json(sidecar, {**expected, "count": int(array.size)})
    return load_token_file(path)


def load_token_file(path: str | Path) -> np.memmap:
    """Memory-map a token file, checking its size against the sidecar's count and dtype."""
    path = Path(path).with_suffix(".bin")
    sidecar = path.with_suffix(".json")
    meta = read_json(sidecar)
    if meta.get("format") != FORMAT_NAME:
        raise LLMInternalsError(f"{sidecar}: field 'format' is not {FORMAT_NAME!r}")
    dtype_name, count = meta.get("dtype"), meta.get("count")
    if dtype_name not in ("uint16", "uint32"):
        raise LLMInternalsError(
            f"{sidecar}: field 'dtype' must be uint16 or uint32, got {dtype_name!r}"
        )
    if not isinstance(count, int) or count < 0:
        raise LLMInternalsError(f"{sidecar}: field 'count' must be an integer >= 0, got {count!r}")
    dtype = np.dtype(dtype_name)
    if not path.exists():
        raise LLMInternalsError(f"token file {path} does not exist (its sidecar does)")
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        raise LLMInternalsError(
            f"{path} has {size} bytes but {sidecar} says {count} {dtype_name} tokens "
            f"({count * dtype.itemsize} bytes)",
            hint="delete both files to rebuild them",
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap cannot map an empty file
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


@dataclass
class TokenSplits:
    """Train and validation token arrays of one corpus under one tokenizer."""

    train: np.ndarray
    val: np.ndarray


def build_splits(
    train_text: str, val_text: str, tokenizer: TextTokenizer, directory: str | Path
) -> TokenSplits:
    """`train.bin` and `val.bin` under `directory` (each rebuilt only when stale)."""
    directory = Path(directory)
    return TokenSplits(
        train=build_token_file(train_text, tokenizer, directory / "train.bin"),
        val=build_token_file(val_text, tokenizer, directory / "val.bin"),
    )


class BatchSampler:
    """Random contiguous blocks of `block_size` + 1 tokens, drawn with its own generator."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        block_size: int,
        seed: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(tokens) < block_size + 1:
            raise LLMInternalsError(
                f"the token array has {len(tokens)} tokens, fewer than block_size + 1 = "
                f"{block_size + 1}",
                hint="use a longer text or a shorter block_size (context)",
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.batches_drawn = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each int64 of shape (batch_size, block_size) on the sampler's device; y is x
        shifted by one token."""
        high = len(self.tokens) - self.block_size
        starts = torch.randint(high, (self.batch_size,), generator=self.generator).tolist()
        rows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts])
        block = torch.from_numpy(rows.astype(np.int64))
        if self.device.type == "cuda":
            block = block.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            block = block.to(self.device)
        self.batches_drawn += 1
        return block[:, :-1], block[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        """The position in the batch stream: generator state and the number of batches drawn."""
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])
