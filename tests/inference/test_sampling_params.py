"""SamplingParams rejects impossible values with an error naming the field; the Sampler rejects
inputs that do not fit together."""

import math

import pytest
import torch

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler, sample


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "hot"),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_p", -0.5),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_k", True),
        ("min_p", -0.01),
        ("min_p", 1.5),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", -1.2),
        ("frequency_penalty", 2.5),
        ("presence_penalty", -2.01),
        ("seed", -1),
        ("seed", 2**64),
        ("seed", 1.5),
        ("stop_token_ids", [-3]),
        ("stop_token_ids", ["eos"]),
        ("stop", [""]),
        ("stop", [3]),
        ("stop", 5),
        ("max_tokens", 0),
        ("max_tokens", 2.0),
        ("n", 0),
        ("n", True),
        ("ignore_eos", "yes"),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value):
    with pytest.raises(LLMInternalsError, match=field) as err:
        SamplingParams(**{field: value})
    assert repr(value)[:4] in err.value.message or field.startswith("stop")


def test_valid_edges_are_accepted_and_normalized():
    p = SamplingParams(
        temperature=0, top_p=1, top_k=0, min_p=1, repetition_penalty=2, frequency_penalty=-2,
        presence_penalty=2, seed=0, stop="###", stop_token_ids=[2, 3],
    )  # fmt: skip
    assert p.greedy and p.temperature == 0.0 and isinstance(p.top_p, float)
    assert p.stop == ("###",) and p.stop_token_ids == (2, 3)
    assert SamplingParams(stop_token_ids=7).stop_token_ids == (7,)
    assert (
        not SamplingParams().uses_penalties and SamplingParams(presence_penalty=0.1).uses_penalties
    )


def test_sampler_rejects_mismatched_inputs():
    sampler = Sampler()
    with pytest.raises(LLMInternalsError, match="shape"):
        sampler(torch.zeros(2, 3, 5), [SamplingParams()] * 2)
    with pytest.raises(LLMInternalsError, match="3 SamplingParams for a batch of 2"):
        sampler(torch.zeros(2, 5), [SamplingParams()] * 3)
    with pytest.raises(LLMInternalsError, match="1 generators for a batch of 2"):
        sampler(torch.zeros(2, 5), [SamplingParams()] * 2, generators=[None])
    with pytest.raises(LLMInternalsError, match="prompt_ids and output_ids"):
        sampler(torch.zeros(1, 5), [SamplingParams(repetition_penalty=1.2)])
    with pytest.raises(LLMInternalsError, match="token id 9 in sequence 0 is outside"):
        sampler(
            torch.zeros(1, 5), [SamplingParams(repetition_penalty=1.2)],
            prompt_ids=[[1, 9]], output_ids=[[]],
        )  # fmt: skip


def test_sampler_rejects_nan_or_fully_masked_rows():
    logits = torch.zeros(3, 4)
    logits[1, 2] = math.nan
    with pytest.raises(LLMInternalsError, match="row 1 has NaN"):
        Sampler()(logits, [SamplingParams()] * 3)
    with pytest.raises(LLMInternalsError, match="row 0 has no finite value"):
        Sampler()(torch.full((1, 4), -math.inf), [SamplingParams()])


def test_single_row_helper():
    assert sample(torch.tensor([0.0, 3.0, 1.0]), SamplingParams(temperature=0)) == 1
    with pytest.raises(LLMInternalsError, match="shape"):
        sample(torch.zeros(1, 3))
