"""Sample text from a model while it trains, to watch it go from noise to words.

Uses the inference `generate` (KV cache, the shared sampler) with temperature and top-k. A model
with a short context (the char model sees 64 characters) would have to stop when its window is
full, so a long preview is generated in pieces: each piece continues from the last half-window of
tokens, as nanoGPT's sampler does by cropping the context. Each piece has its own seed derived
from `seed`, so previews are reproducible and never touch the training random streams.
"""

from __future__ import annotations

from typing import Any

import torch

from llm_internals.inference.generate import generate


@torch.no_grad()
def generate_preview(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int = 50,
) -> str:
    """`prompt` continued by `max_new_tokens` sampled tokens, decoded (prompt excluded)."""
    was_training = model.training
    model.eval()
    prompt_ids = list(tokenizer.encode(prompt)) or [0]
    window = model.config.max_seq_len
    new_ids: list[int] = []
    piece = 0
    while len(new_ids) < max_new_tokens:
        context = (prompt_ids + new_ids)[-max(window // 2, 1) :]
        room = min(max_new_tokens - len(new_ids), window - len(context))
        result = generate(
            model,
            None,
            context,
            max_new_tokens=room,
            eos_token_id=None,
            temperature=temperature,
            top_k=min(top_k, model.config.vocab_size),
            seed=seed * 1000 + piece,
        )
        new_ids += result.token_ids
        piece += 1
    model.train(was_training)
    return tokenizer.decode(new_ids)
