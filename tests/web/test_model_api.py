"""The Model view's routes over HTTP (FastAPI's TestClient): the numbers are those of
web/model_inspect.py (tested against transformers there), the model loads once, and bad
requests (long prompt, unknown layer or head, bad temperature, no model) get clear JSON errors."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from llm_internals.explain import lesson_model
from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.web import model_inspect as mi
from llm_internals.web.app import create_app

PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random DecoderLM (two layers, two heads) in our checkpoint format."""
    directory = tmp_path_factory.mktemp("tiny-model")
    save_checkpoint(tiny_decoder(0), directory)
    tiny_tokenizer().save(directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(str(model_dir))) as c:
        yield c


def test_inspect_returns_the_models_own_numbers(client, model_dir):
    body = client.get("/api/model/inspect", params=dict(prompt=PROMPT, layer=1, head=1)).json()
    model, tokenizer, _ = load_model_and_tokenizer(model_dir)
    ids = tokenizer.encode(PROMPT)
    assert [t["id"] for t in body["tokens"]] == ids
    assert [t["piece"] for t in body["tokens"]] == list(PROMPT)
    run = mi.run_prompt(model, ids)
    assert body["attention"] == run.attention[1][1].tolist()
    assert (body["n_layers"], body["n_heads"]) == (2, 2)
    assert len(body["residual_norms"]) == len(body["logit_lens"]) == 3
    assert body["logit_lens"][-1][-1][0]["id"] == int(run.logits[-1].argmax())
    assert body["routing"] == []
    probs = torch.softmax(run.logits[-1], dim=-1)
    assert body["next_token"]["tokens"][0]["prob"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_next_token_applies_the_sliders(client):
    cold = client.get("/api/model/next-token", params=dict(prompt=PROMPT, temperature=0.3)).json()
    hot = client.get("/api/model/next-token", params=dict(prompt=PROMPT, temperature=3.0)).json()
    assert cold["tokens"][0]["prob"] > hot["tokens"][0]["prob"]
    cut = client.get("/api/model/next-token", params=dict(prompt=PROMPT, top_k=2)).json()
    assert cut["kept"] == 2 and sum(t["prob"] for t in cut["tokens"]) == pytest.approx(1.0)


def test_the_model_loads_once(client):
    first = client.app.state.explorer_model
    client.get("/api/model")
    client.get("/api/model/inspect", params=dict(prompt="abc"))
    assert client.app.state.explorer_model is first


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        (dict(prompt="a" * (mi.MAX_PROMPT_TOKENS + 1)), 413, f"at most {mi.MAX_PROMPT_TOKENS}"),
        (dict(prompt="a" * 10_000), 413, f"at most {mi.MAX_PROMPT_TOKENS} tokens"),
        (dict(prompt=""), 400, "prompt is empty"),
        (dict(prompt="abc", layer=2), 404, "unknown layer 2: this model has 2 layers"),
        (dict(prompt="abc", layer=-1), 404, "unknown layer -1"),
        (dict(prompt="abc", head=5), 404, "unknown head 5: this model has 2 heads"),
        (dict(prompt="abc", temperature=-1), 400, "temperature"),
        (dict(prompt="abc", top_p=0), 400, "top_p"),
        (dict(prompt="abc", layer="x"), 400, "layer"),
        (dict(prompt="ABC"), 400, "character 'A' is not in"),
    ],
)
def test_bad_requests_get_clear_errors(client, params, status, message):
    response = client.get("/api/model/inspect", params=params)
    assert response.status_code == status
    body = response.json()
    assert message in body["error"] and set(body) == {"error", "hint"}


def test_without_a_model_the_shipped_model_is_shown():
    with TestClient(create_app(None)) as c:
        info = c.get("/api/model").json()
        body = c.get("/api/model/inspect", params=dict(prompt="To be, or not to be")).json()
    assert info["path"] == str(lesson_model.LESSON_MODEL_DIR)
    _, tokenizer = lesson_model.load_lesson_model()
    assert [t["id"] for t in body["tokens"]] == tokenizer.encode("To be, or not to be")
    assert (info["n_layers"], body["n_heads"]) == (4, 4)


def test_without_any_model_the_error_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(lesson_model, "LESSON_MODEL_DIR", tmp_path / "missing")
    with TestClient(create_app(None)) as c:
        response = c.get("/api/model/inspect", params=dict(prompt="abc"))
    assert response.status_code == 404
    assert "trained model is missing" in response.json()["error"]
    assert "--model PATH" in response.json()["hint"]
