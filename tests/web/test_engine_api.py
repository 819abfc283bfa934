"""The Engine view's routes over HTTP: a session steps a real engine (its views are checked
against a test engine in test_engine_session.py); limits (sessions, requests, settings) and
unknown sessions give clear JSON errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.web import engine_api
from llm_internals.web.app import create_app
from llm_internals.web.engine_session import EngineLimits


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-model")
    save_checkpoint(tiny_decoder(0), directory)
    tiny_tokenizer().save(directory / "tokenizer.json")
    with TestClient(create_app(str(directory))) as c:
        yield c


def new_session(client, **settings) -> str:
    response = client.post("/api/engine/sessions", json=settings or None)
    assert response.status_code == 200, response.json()
    return response.json()["id"]


def test_add_step_and_reset(client):
    sid = new_session(client, block_size=2, num_blocks=10)
    view = client.post(f"/api/engine/sessions/{sid}/requests",
                       json=dict(prompt="the cat", max_tokens=3)).json()  # fmt: skip
    assert view["request_id"] == "r1" and view["requests"][0]["status"] == "waiting"
    assert view["settings"]["block_size"] == 2 and len(view["pool"]) == 10
    steps = 0
    while view["has_unfinished"]:
        view = client.post(f"/api/engine/sessions/{sid}/step").json()
        steps += 1
        if steps == 1:
            assert view["events"] == [dict(kind="admitted", request="r1", index=0)]
            assert view["sequences"][0]["block_table"] == [0, 1, 2, 3]  # 7 tokens, 2 per block
            assert view["sequences"][0]["filled"] == [2, 2, 2, 1]
    assert steps == 3  # prefill + first token, then two decodes
    assert (
        view["requests"][0]["status"] == "finished" and len(view["requests"][0]["outputs"][0]) == 3
    )
    assert view["events"] == [dict(kind="finished", request="r1", reason="length")]
    assert view["memory"]["allocated_bytes"] == 0 and view["counters"]["blocks_cached"] == 4
    assert client.get(f"/api/engine/sessions/{sid}").json()["steps"] == 3
    fresh = client.post(f"/api/engine/sessions/{sid}/reset").json()
    assert fresh["steps"] == 0 and fresh["requests"] == [] and fresh["settings"]["block_size"] == 2
    assert client.post(f"/api/engine/sessions/{sid}/close").json() == {"closed": True}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("requests", dict(prompt="abc", max_tokens=0), 400, "max_tokens must be an integer in"),
        ("requests", dict(prompt="abc", max_tokens=1000), 400, "[1, 32]"),
        ("requests", dict(prompt="a" * 2000, max_tokens=2), 400, "an engine request takes 1 to 48"),
        ("requests", dict(prompt="", max_tokens=2), 400, "prompt is empty"),
        ("step", None, 400, "nothing to run"),
    ],
)
def test_bad_engine_requests(client, path, body, status, message):
    sid = new_session(client)
    response = client.post(f"/api/engine/sessions/{sid}/{path}", json=body)
    assert response.status_code == status
    assert message in response.json()["error"], response.json()
    client.post(f"/api/engine/sessions/{sid}/close")


def test_limits_and_unknown_sessions(client, monkeypatch):
    response = client.post("/api/engine/sessions", json=dict(num_blocks=1000))
    assert response.status_code == 400
    assert "num_blocks must be an integer in [1, 64], got 1000" in response.json()["error"]
    response = client.post("/api/engine/sessions/nope/step")
    assert response.status_code == 404 and "no engine session 'nope'" in response.json()["error"]
    monkeypatch.setattr(engine_api, "MAX_SESSIONS", len(client.app.state.engine_sessions) + 1)
    new_session(client)
    response = client.post("/api/engine/sessions")
    assert response.status_code == 429 and "the limit is" in response.json()["error"]
    sid = list(client.app.state.engine_sessions)[-1]
    client.app.state.engine_sessions[sid].limits = EngineLimits(max_requests=1)
    client.post(f"/api/engine/sessions/{sid}/requests", json=dict(prompt="ab", max_tokens=1))
    response = client.post(f"/api/engine/sessions/{sid}/requests",
                           json=dict(prompt="ab", max_tokens=1))  # fmt: skip
    assert response.status_code == 400 and "the limit is 1" in response.json()["error"]
