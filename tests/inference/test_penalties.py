"""Repetition penalty equals HF's RepetitionPenaltyLogitsProcessor; frequency and presence
penalties follow the OpenAI formula z_j - c_j * frequency - [c_j > 0] * presence."""

import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from llm_internals.inference.params import SamplingParams
from llm_internals.inference.penalties import (
    apply_frequency_presence_penalty,
    apply_repetition_penalty,
    token_counts,
)
from llm_internals.inference.sampling import Sampler
from llm_internals.trace import recording


def test_token_counts():
    counts = token_counts([[1, 1, 3], [], [0]], vocab_size=4)
    assert counts.tolist() == [[0, 2, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]


def test_repetition_penalty_equals_hf_per_row():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=gen) * 3
    logits[0, 5] = 0.0  # zero stays zero either way
    histories = [[5, 5, 7, 30, 2], [1, 2, 3, 4, 39], [0, 0, 0, 0, 0]]
    penalties = [1.3, 0.7, 2.0]
    seen = token_counts(histories, 40) > 0
    ours = apply_repetition_penalty(logits, seen, torch.tensor(penalties))
    for row, (history, penalty) in enumerate(zip(histories, penalties, strict=True)):
        hf = RepetitionPenaltyLogitsProcessor(penalty)(
            torch.tensor([history]), logits[row : row + 1].clone()
        )
        assert torch.equal(ours[row], hf[0])
    # Positive logits shrink, negative ones grow in magnitude: a penalty > 1 always discourages.
    touched = seen[0]
    assert (ours[0][touched] <= logits[0][touched]).all()
    assert torch.equal(ours[0][~touched], logits[0][~touched])


def test_sampler_penalizes_prompt_and_output_for_repetition_but_only_output_for_openai():
    vocab = 6
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0, -0.5, 3.0]])
    prompt, output = [0, 1], [2, 2, 2, 3]
    params = SamplingParams(repetition_penalty=1.5, frequency_penalty=0.4, presence_penalty=0.25)
    with recording() as rec:
        Sampler(torch.Generator().manual_seed(0))(
            logits, [params], prompt_ids=[prompt], output_ids=[output]
        )
    expected = logits[0].tolist()
    for j in set(prompt + output):  # HF/CTRL repetition penalty over everything seen
        expected[j] = expected[j] / 1.5 if expected[j] > 0 else expected[j] * 1.5
    for j in set(output):  # OpenAI penalties over generated tokens only
        expected[j] -= output.count(j) * 0.4 + 0.25
    assert torch.allclose(rec.get("sampling.penalized")[0], torch.tensor(expected))
    assert len(expected) == vocab


def test_frequency_and_presence_penalty_formula():
    logits = torch.zeros(2, 3)
    counts = torch.tensor([[0, 1, 4], [2, 0, 0]])
    out = apply_frequency_presence_penalty(
        logits, counts, torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0])
    )
    assert out.tolist() == [[0.0, -1.5, -3.0], [2.0, 0.0, 0.0]]
