"""Encoder-decoder (Seq2SeqLM, Marian) generation: encode once, decode one token per step.

    encode:  memory = encoder(source)                       once per request
    cross:   K_c, V_c = memory W_k, memory W_v  per layer    once: the source does not change
    start:   decoder input = [decoder_start_token_id]        Marian: the pad token
    loop:    h = decoder(last token, self K/V cache, K_c, V_c)
             token = sampler(h E^T + b)                      stop at eos, max_new_tokens, ...

Two caches per decoder layer. The self-attention cache (ContiguousKVCache) grows by one
position per step, exactly as in a decoder-only model. The cross-attention cache is filled at the
first step and never changes: without it every step would recompute 2 x layers projections of
the whole source (S x d x d each). With `use_cache=False` every step re-runs the decoder over the
whole target and re-projects the encoder output (the encoder still runs once); the tokens are
the same. Sources of different lengths are right-padded with the pad token and masked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from llm_internals.inference.decode_loop import (
    cache_length,
    evaluating,
    next_step,
    sample_and_accept,
)
from llm_internals.inference.generation_request import pad_prompts
from llm_internals.inference.generation_types import StreamChunk, Timing
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.inference.sampling import Sampler
from llm_internals.inference.sequence_state import SequenceState
from llm_internals.layers.masks import padding_mask
from llm_internals.trace import is_recording, record


class CrossAttentionKVCache:
    """Per decoder layer, the keys and values of the encoder output, computed once.

    Implements the attention-cache protocol of layers/multihead.py. The first forward passes the
    encoder output, so the layer projects it and `update` stores the K/V; later forwards pass an
    empty (batch, 0, d) source, so the projections cost nothing, and `update` returns the stored
    K/V with the source padding mask.
    """

    def __init__(self, n_layers: int, src_mask: torch.Tensor | None) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.mask = None if src_mask is None else padding_mask(src_mask)

    @property
    def filled(self) -> bool:
        return all(k is not None for k in self.keys)

    def past_length(self) -> int:
        return 0  # cross-attention has no causal offset

    def update(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.keys[layer_idx] is None:
            self.keys[layer_idx], self.values[layer_idx] = k, v
            if is_recording():
                record(
                    "cross_kv_cache.keys",
                    k,
                    note=f"layer {layer_idx}: encoder output x W_k, computed once, reused",
                )
        return self.keys[layer_idx], self.values[layer_idx], self.mask

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only these batch rows (drop sequences that finished)."""
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        if self.mask is not None:
            self.mask = self.mask[index]


def seq2seq_loop(
    model: torch.nn.Module,
    seqs: list[SequenceState],
    use_cache: bool,
    padding_side: str,
    timing: Timing,
) -> Iterator[StreamChunk]:
    """Yield one StreamChunk per sampled token until every sequence has finished."""
    device = next(model.parameters()).device
    pad_id = model.settings.pad_token_id
    # Sources are always right-padded, whatever padding_side says: the encoder's positions count
    # from column 0 (Marian, like HF, does not derive them from the mask), so left padding would
    # shift every real token's position and change the translation. HF's Marian tokenizer pads
    # right for the same reason.
    src, src_mask, _ = pad_prompts([s.prompt_ids for s in seqs], "right", pad_id, device)
    src_mask = None if bool(src_mask.all()) else src_mask
    targets = torch.tensor([s.decoder_ids for s in seqs], device=device)  # (batch, 1)
    n_layers = len(model.decoder_blocks)
    cache = cross_cache = None
    if use_cache:
        cache = _decoder_cache(model, len(seqs), cache_length(seqs, targets.shape[1]))
        cross_cache = CrossAttentionKVCache(n_layers, src_mask)
    sampler = Sampler()
    active = list(seqs)
    inputs = targets
    prefill = True
    with evaluating(model):
        while True:
            started = time.perf_counter()
            with torch.inference_mode():
                if prefill:
                    memory = model.encode(src, src_mask)
                    record("seq2seq.encoder_output", memory, note="computed once per request")
                source, source_mask = memory, src_mask
                if cross_cache is not None and cross_cache.filled:
                    source, source_mask = memory[:, :0], None  # K/V come from the cross cache
                hidden = model.decode(inputs, source, source_mask, None, cache, cross_cache)
                logits = model.logits(hidden[:, -1])
                tokens, chunks = sample_and_accept(sampler, logits, active)
            timing.add_step(time.perf_counter() - started, len(tokens), prefill)
            prefill = False
            yield from chunks

            started = time.perf_counter()
            step = next_step(active, tokens, device)
            if step is None:
                return
            active, new_tokens, index = step.active, step.new_tokens, step.index
            if index is not None:
                targets, memory = targets[index], memory[index]
                src_mask = None if src_mask is None else src_mask[index]
                if cache is not None:
                    cache.select_rows(index)
                    cross_cache.select_rows(index)
            targets = torch.cat([targets, new_tokens], dim=1)
            inputs = new_tokens if cache is not None else targets
            timing.decode_s += time.perf_counter() - started


def _decoder_cache(model: torch.nn.Module, batch: int, max_len: int) -> ContiguousKVCache:
    """A self-attention cache shaped for the decoder stack (its own depth and heads)."""
    attention = model.decoder_blocks[0].self_attn
    weight = next(model.parameters())
    return ContiguousKVCache(
        len(model.decoder_blocks),
        batch,
        attention.n_kv_heads,
        max_len,
        attention.head_dim,
        dtype=weight.dtype,
        device=weight.device,
    )
