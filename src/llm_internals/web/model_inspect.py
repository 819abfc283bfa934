"""What the explorer's Model view shows about one prompt, computed by running the real model.

One forward of the loaded decoder LM over the prompt, on its recorded from-scratch attention path
(layers/attention.py records the softmax weights of every layer under the name "weights"), gives:

    tokens           the prompt's ids and the text piece of each id
    attention        weights[layer][head][query][key] = softmax(q k^T / sqrt(d_k) + mask), the
                     model's own weights (GQA: each query head with the K/V head it shares)
    residual norms   ||h_l[t]||_2 for the embedding (l = 0) and each block's output (l = 1..L)
    logit lens       softmax(W_head Norm_f(h_l[t])): what each layer's residual would predict
                     if the model stopped there; the last row is the model's own prediction
    routing          per MoE layer, the experts each token was sent to and their weights
                     (MoELayer.last_routing)

`next_token_distribution` turns the last position's logits into the probabilities the sampler
draws from (inference/sampling.py: temperature, then top-k, top-p), so the page's sliders show
exactly what generation would do. Everything here is plain data (lists, floats) ready for JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler
from llm_internals.layers.moe import MoELayer
from llm_internals.trace import recording
from llm_internals.web.errors import ApiError

MAX_PROMPT_TOKENS = 64
TOP_TOKENS = 5


@dataclass
class PromptRun:
    """The tensors of one forward over a prompt of T tokens (batch dimension dropped)."""

    ids: list[int]
    logits: torch.Tensor  # (T, vocab)
    attention: list[torch.Tensor]  # per layer: (heads, T, T)
    residuals: torch.Tensor  # (L + 1, T, d_model): embedding, then each block's output
    routing: list[dict[str, Any]]  # per MoE layer: {"layer", "experts" [T, k], "weights" [T, k]}


def encode_prompt(tokenizer: Any, prompt: str, limit: int = MAX_PROMPT_TOKENS) -> list[int]:
    """The prompt's token ids; an error names the limit when there are none or too many (413,
    the HTTP status for "too large")."""
    if not isinstance(prompt, str) or not prompt:
        raise LLMInternalsError("prompt is empty", hint="type a few words into the prompt box")
    if len(prompt) > 8 * limit:  # cheap guard before encoding: no token is shorter than 1/8 char
        raise ApiError(
            413,
            f"prompt has {len(prompt)} characters; the explorer takes at most {limit} tokens",
            hint=f"shorten the prompt to at most {limit} tokens",
        )
    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise LLMInternalsError("prompt encodes to no tokens", hint="type a few words")
    if len(ids) > limit:
        raise ApiError(
            413,
            f"prompt has {len(ids)} tokens; the explorer takes at most {limit}",
            hint=f"shorten the prompt to at most {limit} tokens",
        )
    return ids


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text of each id on its own (a byte-level piece that is part of a character shows as
    the replacement character)."""
    return [tokenizer.decode([i]) for i in ids]


@contextmanager
def scratch_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run attention on the recorded from-scratch path (the fused kernels record no weights),
    then switch back to whatever the model used before."""
    before = model.config.attn_impl
    model.set_attn_impl("scratch")
    try:
        yield
    finally:
        model.set_attn_impl(before)


def run_prompt(model: torch.nn.Module, ids: list[int]) -> PromptRun:
    """One recorded forward over `ids` (see the module docstring)."""
    if len(ids) > model.config.max_seq_len:
        raise LLMInternalsError(
            f"prompt has {len(ids)} tokens; this model's context is {model.config.max_seq_len}",
            hint="shorten the prompt",
        )
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    with scratch_attention(model), recording() as rec, torch.inference_mode():
        logits = model(idx)
    weights = rec.all("weights")
    if len(weights) != model.config.n_layers:
        raise LLMInternalsError(
            f"recorded {len(weights)} attention maps for {model.config.n_layers} layers",
            hint="this model's attention does not record its weights",
        )
    residuals = torch.stack([rec.get("embedding"), *rec.all("block_output")])[:, 0]
    return PromptRun(
        ids=list(ids),
        logits=logits[0].float().cpu(),
        attention=[_per_head(w[0], len(ids)).float().cpu() for w in weights],
        residuals=residuals.float(),
        routing=expert_routing(model),
    )


def _per_head(weights: torch.Tensor, n_queries: int) -> torch.Tensor:
    """(heads, T, keys): absorbed MLA folds its heads into the query axis (one shared latent
    key: row h * T + i is query i of head h, layers/mla.py), recorded as (1, heads * T, keys)."""
    return weights.reshape(-1, n_queries, weights.shape[-1])


def expert_routing(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Per MoE layer of the last forward: the chosen expert ids and combine weights per token."""
    routed = []
    for layer, block in enumerate(model.blocks):
        ffn = block.ffn
        if isinstance(ffn, MoELayer) and ffn.last_routing is not None:
            routed.append(
                dict(
                    layer=layer,
                    n_experts=ffn.config.n_experts,
                    experts=ffn.last_routing.indices.tolist(),
                    weights=ffn.last_routing.weights.float().tolist(),
                )
            )
    return routed


def residual_norms(run: PromptRun) -> list[list[float]]:
    """norms[l][t] = ||h_l[t]||_2 (l = 0: the embedding; l: after block l)."""
    return run.residuals.norm(dim=-1).tolist()


def top_tokens(probs: torch.Tensor, tokenizer: Any, k: int) -> list[dict[str, Any]]:
    """The k most likely tokens of a (vocab,) distribution: id, text piece, probability."""
    values, ids = probs.topk(min(k, probs.shape[-1]))
    pieces = token_pieces(tokenizer, ids.tolist())
    return [
        dict(id=int(i), piece=p, prob=float(v))
        for i, p, v in zip(ids.tolist(), pieces, values.tolist(), strict=True)
    ]


def logit_lens(
    model: torch.nn.Module, run: PromptRun, tokenizer: Any, k: int = TOP_TOKENS
) -> list[list[list[dict[str, Any]]]]:
    """lens[l][t]: the top-k next tokens of softmax(lm_head(norm_f(h_l[t]))).

    For l = L (the last block) this is the model's own next-token distribution. Post-norm models
    (no final norm) apply the head to the residual as it is, as their forward does.
    """
    weight = next(model.parameters())
    lens = []
    for h in run.residuals:  # one layer at a time: (T, vocab) logits, not (L + 1, T, vocab)
        with torch.inference_mode():
            h = h.to(device=weight.device, dtype=weight.dtype)
            if model.norm_f is not None:
                h = model.norm_f(h)
            probs = torch.softmax(model.lm_head(h).float(), dim=-1).cpu()
        lens.append([top_tokens(p, tokenizer, k) for p in probs])
    return lens


def sampling_params(temperature: float, top_p: float, top_k: int) -> SamplingParams:
    """SamplingParams for the sliders (its validation names a bad field)."""
    return SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)


def next_token_distribution(
    logits: torch.Tensor, tokenizer: Any, params: SamplingParams, k: int = TOP_TOKENS
) -> dict[str, Any]:
    """The top-k of the distribution the sampler draws the next token from, given (vocab,)
    logits of the last position: Sampler.distribution (temperature, top-k, top-p). Temperature
    0 is greedy: the sampler takes the argmax, shown as probability 1 for that token."""
    last = logits.float()[None]
    if params.greedy:
        probs = torch.zeros_like(last[0])
        probs[int(last.argmax())] = 1.0
    else:
        probs = Sampler().distribution(last, [params])[1][0]
    raw = torch.softmax(last[0], dim=-1)
    top = top_tokens(probs, tokenizer, k)
    for entry in top:
        entry["raw_prob"] = float(raw[entry["id"]])
    return dict(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        kept=int((probs > 0).sum()),
        vocab=int(probs.shape[-1]),
        tokens=top,
    )
