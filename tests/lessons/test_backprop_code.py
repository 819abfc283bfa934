"""The backprop lesson's "Backprop in Python" section shows the function it runs (its current
source) and that function's gradients, which autograd reproduces."""

import inspect

import pytest
import torch

from llm_internals.explain.lessons import backprop as lesson_module
from llm_internals.training.backprop import tiny_network


@pytest.fixture(scope="module")
def step():
    sections = {s.title: s.steps for s in lesson_module.build().sections}
    (only,) = sections["Backprop in Python"]
    return only


def test_shows_the_current_source_of_the_backward_function(step):
    source = inspect.getsource(tiny_network.two_layer_backward)
    assert f"```python\n{source.rstrip()}\n```" in step.text
    assert "llm_internals.training.backprop.tiny_network.two_layer_backward" in step.text


def test_gradients_shown_match_autograd(step):
    params = {k: v.clone().requires_grad_(True) for k, v in lesson_module.network_params().items()}
    x = torch.tensor(lesson_module.X, dtype=torch.float64)
    y = torch.tensor(lesson_module.Y, dtype=torch.float64)
    h = torch.sigmoid(x @ params["W1"].T + params["b1"])
    p = torch.sigmoid(h @ params["W2"].T + params["b2"])
    torch.nn.functional.binary_cross_entropy(p, y).backward()
    for name, tensor in params.items():
        shown = step.values[f"dL/d{name}"]
        torch.testing.assert_close(shown, tensor.grad.reshape(shown.shape), rtol=1e-10, atol=0)
