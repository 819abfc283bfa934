"""`serve --speculative-model / --speculative-ngram / --num-speculative-tokens`: the flags reach
the engine (the `serve` command runs in-process; only the blocking uvicorn call is replaced by a
server thread), greedy completions equal `generate` of the target alone, /metrics reports the
speculation, n > 1 is a 400 naming n, and a bad draft or gamma is a one-line startup error
naming the flag and the values."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch

import llm_internals.inference.server as server_package
from llm_internals.cli import main
from llm_internals.inference.generate import generate
from llm_internals.inference.server import serve_in_thread
from llm_internals.inference.server.metrics import parse_prometheus_text
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.tokenizer.char import CharTokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz ,."


def write_checkpoint(directory: Path, tokenizer: CharTokenizer, seed: int) -> Path:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=64)  # fmt: skip
    save_checkpoint(DecoderLM(config), directory)
    tokenizer.save(directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speculative-serve")
    tokenizer = CharTokenizer.train(LETTERS)
    return {
        "target": write_checkpoint(root / "target", tokenizer, seed=0),
        "draft": write_checkpoint(root / "draft", tokenizer, seed=0),  # agrees with the target
        "other_vocab": write_checkpoint(root / "other_vocab", CharTokenizer.train("abc"), seed=1),
        # same vocabulary size, different characters: another tokenizer
        "other_tokenizer": write_checkpoint(
            root / "other_tokenizer", CharTokenizer.train(LETTERS.upper()), seed=1
        ),
    }


def serve_and_probe(monkeypatch, options: list[str], probe) -> None:
    """Run `serve` with options; probe(url) runs while the server answers."""
    done = []

    def fake_serve(app, **_):
        with serve_in_thread(app) as url:
            probe(url)
            done.append(True)

    monkeypatch.setattr(server_package, "serve", fake_serve)
    assert main(["serve", "--threads", "1", "--num-blocks", "64", "--block-size", "4",
                 "--served-model-name", "tiny", *options]) == 0  # fmt: skip
    assert done


@pytest.mark.parametrize("draft", ["model", "ngram"])
def test_speculative_flags_serve_the_target_distribution(folders, monkeypatch, draft):
    source = (["--speculative-model", str(folders["draft"])] if draft == "model"
              else ["--speculative-ngram"])  # fmt: skip
    prompt = "abc abc abc ab"
    model, tokenizer, _ = load_model_and_tokenizer(folders["target"], None)
    expected = generate(model, tokenizer, prompt, max_new_tokens=12).text

    def probe(url: str) -> None:
        body = dict(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
        reply = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["text"] == expected
        with httpx.stream(
            "POST", url + "/v1/completions", json=body | {"stream": True}, timeout=30
        ) as streamed:  # several tokens per step, streamed
            events = [line.removeprefix("data: ") for line in streamed.iter_lines()
                      if line.startswith("data: ")]  # fmt: skip
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected
        refused = httpx.post(url + "/v1/completions", json=body | {"n": 2}, timeout=30)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "n" and "speculative" in error["message"]
        metrics = parse_prometheus_text(httpx.get(url + "/metrics", timeout=30).text)
        assert metrics["spec_decode_num_speculative_tokens"] == 3
        assert metrics["spec_decode_draft_tokens_total"] > 0
        assert metrics["spec_decode_rounds_total"] > 0
        assert (
            metrics["spec_decode_position_1_draft_tokens_total"]
            == (metrics["spec_decode_rounds_total"])
        )
        if draft == "model":  # the draft is the target's own weights: all accepted
            assert (metrics["spec_decode_accepted_tokens_total"]
                    == metrics["spec_decode_draft_tokens_total"])  # fmt: skip
            assert metrics["spec_decode_tokens_per_round"] > 2
        assert metrics["blocks_used"] == 0  # nothing half-allocated after the refused request
        assert metrics["blocks_free"] + metrics["blocks_cached"] == 64

    serve_and_probe(monkeypatch, ["--model", str(folders["target"]), *source,
                                  "--num-speculative-tokens", "3"], probe)  # fmt: skip


@pytest.mark.parametrize(
    "draft, options, message",
    [
        ("other_vocab", [], "vocabulary (3 tokens) differs from the target's (29)"),
        ("other_tokenizer", [], "tokenizer differs from the target's: token id 3 is 'A' for the "
                                "draft, 'a' for the target"),
        ("draft", ["--num-speculative-tokens", "0"], "--num-speculative-tokens must be at "
                                                     "least 1, got 0"),
        (None, ["--num-speculative-tokens", "2"], "need a draft"),
        ("draft", ["--speculative-ngram"], "exclude each other"),
    ],
)  # fmt: skip
def test_bad_draft_options_are_one_line_startup_errors(folders, capsys, draft, options,
                                                       message):  # fmt: skip
    source = [] if draft is None else ["--speculative-model", str(folders[draft])]
    assert main(["serve", "--model", str(folders["target"]), *source, *options]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "error:" in out and message in out and "Traceback" not in out
    if draft in ("other_vocab", "other_tokenizer"):
        assert f"--speculative-model {folders[draft]}" in out
