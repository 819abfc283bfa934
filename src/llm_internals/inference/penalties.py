"""Penalties that push the next-token logits away from tokens already in the text.

Two conventions are in use and both are implemented here as their owners define them:

- Repetition penalty (CTRL, Keskar et al. 2019; HF `RepetitionPenaltyLogitsProcessor`): every
  token that occurs anywhere in the prompt or the output so far, however often, has its logit
  divided by the penalty when positive and multiplied by it when negative, so a penalty > 1
  always makes the token less likely:  z_j -> z_j / r if z_j > 0 else z_j * r.
- Frequency and presence penalties (OpenAI API): subtract from the logit of every token j that
  the model has generated so far (output only, not the prompt):
      z_j -> z_j - c_j * frequency_penalty - [c_j > 0] * presence_penalty
  where c_j counts the occurrences of j, so frequency grows with each repeat and presence is a
  flat charge for appearing at all.
Each function takes per-row penalties of shape (batch,), so one call serves a mixed batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_internals.errors import LLMInternalsError


def token_counts(
    sequences: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """How often each token id occurs in each sequence: int64 of shape (batch, vocab_size)."""
    counts = torch.zeros(len(sequences), vocab_size, dtype=torch.int64, device=device)
    for row, ids in enumerate(sequences):
        if len(ids) == 0:
            continue
        ids_tensor = torch.as_tensor(list(ids), dtype=torch.int64, device=device)
        if int(ids_tensor.min()) < 0 or int(ids_tensor.max()) >= vocab_size:
            bad = [i for i in ids if not 0 <= i < vocab_size][0]
            raise LLMInternalsError(
                f"token id {bad} in sequence {row} is outside the vocabulary (size {vocab_size})",
                hint="the logits' last dimension must be the vocabulary the ids come from",
            )
        counts[row].scatter_add_(0, ids_tensor, torch.ones_like(ids_tensor))
    return counts


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """CTRL/HF repetition penalty on the tokens where `seen` (batch, vocab) is True.

    `penalty` has shape (batch,); 1.0 leaves a row unchanged.
    """
    penalty = penalty.to(logits.dtype)[:, None]
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def apply_frequency_presence_penalty(
    logits: torch.Tensor,
    output_counts: torch.Tensor,
    frequency_penalty: torch.Tensor,
    presence_penalty: torch.Tensor,
) -> torch.Tensor:
    """OpenAI penalties: z - c * frequency - [c > 0] * presence, with c the output counts."""
    counts = output_counts.to(logits.dtype)
    frequency = frequency_penalty.to(logits.dtype)[:, None]
    presence = presence_penalty.to(logits.dtype)[:, None]
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence
