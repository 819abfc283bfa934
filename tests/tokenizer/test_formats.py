"""Saving and loading: our JSON, HF tokenizer.json and tiktoken rank files, and bad files."""

import base64
import json
import os

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.tokenizer import Tokenizer

from .conftest import EOT, MULTILINGUAL, hf_from_ours

SAMPLE = f"O Romeo, Romeo! wherefore art thou Romeo?{EOT}\n" + MULTILINGUAL


def _same(a: Tokenizer, b: Tokenizer) -> None:
    assert a.vocab == b.vocab
    assert a.special_tokens == b.special_tokens
    assert a.encode(SAMPLE, allowed_special="all") == b.encode(SAMPLE, allowed_special="all")


def test_own_json_roundtrip_is_versioned(tok_small, tmp_path):
    path = tmp_path / "tok.json"
    tok_small.save(path)
    saved = json.loads(path.read_text())
    assert saved["format"] == "llm-internals-tokenizer" and saved["version"] == 1
    loaded = Tokenizer.load(path)
    _same(tok_small, loaded)
    assert loaded.merges == tok_small.merges and loaded.pattern == tok_small.pattern


def test_hf_export_loads_in_tokenizers_and_back(tok_small, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    path = tmp_path / "tokenizer.json"
    tok_small.to_hf(path)
    hf = HFTokenizer.from_file(str(path))
    ids = tok_small.encode(SAMPLE, allowed_special="all")
    assert hf.encode(SAMPLE).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == SAMPLE
    _same(tok_small, Tokenizer.load(path))
    _same(tok_small, Tokenizer.from_hf(tmp_path))


def test_tiktoken_roundtrip(tok_small, tmp_path):
    path = tmp_path / "tok.tiktoken"
    ranks = tok_small.to_tiktoken(path)
    assert len(path.read_text().splitlines()) == len(ranks) == len(tok_small.vocab)
    loaded = Tokenizer.from_tiktoken(path, pattern="gpt2", special_tokens=tok_small.special_tokens)
    _same(tok_small, loaded)
    again = tmp_path / "again.json"
    loaded.save(again)  # token_id ranks survive our JSON too
    _same(loaded, Tokenizer.load(again))
    hf = hf_from_ours(loaded)
    assert hf.encode(SAMPLE).ids == loaded.encode(SAMPLE, allowed_special="all")


def _expect(path, match):
    with pytest.raises(LLMInternalsError, match=match) as info:
        Tokenizer.load(path)
    assert str(path) in info.value.message
    return info.value


def test_malformed_and_truncated_json(tok_small, tmp_path):
    good = tmp_path / "good.json"
    tok_small.save(good)
    text = good.read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    _expect(truncated, "malformed JSON at line")
    obj = json.loads(text)
    for change, match in (
        (lambda o: o.pop("vocab"), "missing field 'vocab'"),
        (lambda o: o.update(version=99), "version 99 is not supported"),
        (lambda o: o.update(merges="abc"), "field 'merges' should be list"),
        (lambda o: o["vocab"].__setitem__(3, [3, "***"]), r"vocab\[3\] has invalid base64"),
        (lambda o: o["merges"].append([1, 99999]), "unknown token id"),
        (lambda o: o.update(merge_ranks="random"), "unknown value 'random'"),
    ):
        broken = json.loads(text)
        change(broken)
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        _expect(path, match)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    _expect(other, "neither an llm-internals tokenizer")
    assert obj["format"] == "llm-internals-tokenizer"


def test_bad_hf_files(tok_small, tmp_path):
    obj = tok_small.to_hf()
    for change, match in (
        (lambda o: o["model"].update(type="WordPiece"), "model.type 'WordPiece' is not BPE"),
        (lambda o: o.update(normalizer={"type": "Lowercase"}), "normalizer"),
        (lambda o: o["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
        (lambda o: o["model"]["merges"].append(["Ġ", "notatoken"]), "not in model.vocab"),
    ):
        broken = json.loads(json.dumps(obj))
        change(broken)
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps(broken))
        _expect(path, match)


def test_bad_rank_files(tok_small, tmp_path):
    good = tmp_path / "good.tiktoken"
    tok_small.to_tiktoken(good)
    lines = good.read_text().splitlines()
    truncated = tmp_path / "truncated.tiktoken"
    truncated.write_text("\n".join(lines[:100]) + "\n" + lines[100].split()[0][:3])
    _expect(truncated, "line 101 should be '<base64 token> <rank>'")
    duplicate = tmp_path / "dup.tiktoken"
    token = lines[300].split()[0]
    duplicate.write_text("\n".join([*lines, f"{token[:-2]}AA 5"]) + "\n")
    _expect(duplicate, "duplicate rank 5 on lines 6 and")
    bad_b64 = tmp_path / "b64.tiktoken"
    bad_b64.write_text("!!!! 0\n")
    _expect(bad_b64, "line 1 has invalid base64")
    empty = tmp_path / "empty.tiktoken"
    empty.write_text("\n")
    _expect(empty, "no tokens")
    _expect(tmp_path / "missing.json", "expected a tokenizer file")


def _one_line(path, match):
    error = _expect(path, match)
    assert "\n" not in error.message
    return error


@pytest.mark.parametrize("bad_id", [-1, 2**21, None, True, 1.5, "7"])
def test_bad_token_ids_name_the_file_and_field(tok_small, tmp_path, bad_id):
    hf = json.loads(json.dumps(tok_small.to_hf()))
    hf["model"]["vocab"]["Ġthe"] = bad_id
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(hf))
    _one_line(path, r"model.vocab\['Ġthe'\] is .* not a token id")
    hf = json.loads(json.dumps(tok_small.to_hf()))
    hf["added_tokens"][0]["id"] = bad_id
    path.write_text(json.dumps(hf))
    _one_line(path, r"added_tokens\[0\]")
    ours = tmp_path / "tok.json"
    tok_small.save(ours)
    obj = json.loads(ours.read_text())
    obj["vocab"][5][0] = bad_id
    ours.write_text(json.dumps(obj))
    _one_line(ours, r"vocab\[5\] (has id .* not a token id|should be \[id, base64 bytes\])")
    tok_small.save(ours)
    obj = json.loads(ours.read_text())
    obj["special_tokens"][EOT] = bad_id
    ours.write_text(json.dumps(obj))
    _one_line(ours, r"special_tokens\['<\|endoftext\|>'\] is .*")


def test_other_malformed_token_fields(tok_small, tmp_path):
    hf = tok_small.to_hf()
    for change, match in (
        (lambda o: o["model"]["vocab"].update({"Ġzzz": o["model"]["vocab"]["Ġthe"]}),
         "gives id .* to two tokens"),
        (lambda o: o["added_tokens"][0].update(content=""), "non-empty content"),
        (lambda o: o.update(added_tokens={"a": 1}), "'added_tokens' should be a list"),
        (lambda o: o["model"]["vocab"].update({"": 9999}), "empty token"),
    ):  # fmt: skip
        broken = json.loads(json.dumps(hf))
        change(broken)
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps(broken))
        _one_line(path, match)
    ours = tmp_path / "tok.json"
    tok_small.save(ours)
    for change, match in (
        (lambda o: o["special_tokens"].update({"": 7000}), "non-empty name"),
        (lambda o: o.update(normalization="NFD"), "field 'normalization' is \"NFD\""),
        (lambda o: o.update(pattern=r"(\w+)|\s"), "capturing group"),
        (lambda o: o.update(pattern=r"\w+"), "does not match"),
    ):
        tok_small.save(ours)
        broken = json.loads(ours.read_text())
        change(broken)
        ours.write_text(json.dumps(broken))
        _one_line(ours, match)
    good = tok_small.to_tiktoken()
    ranks = tmp_path / "r.tiktoken"
    for line, match in (
        (f"YWJj {2**21}", "rank 2097152, above the largest token id"),
        ("YWJj ²", "non-integer rank '²'"),
        (" 5", "should be '<base64 token> <rank>'"),
    ):
        lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in good.items()]
        ranks.write_text("\n".join([*lines[:10], line]) + "\n")
        _one_line(ranks, match)


def test_save_is_atomic(tok_small, tmp_path, monkeypatch):
    path = tmp_path / "tok.json"
    path.write_text("previous content")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        tok_small.save(path)
    with pytest.raises(OSError, match="disk full"):
        tok_small.to_hf(tmp_path / "tokenizer.json")
    assert path.read_text() == "previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]


def test_constructor_rejects_inconsistent_vocabularies():
    base = {i: bytes([i]) for i in range(256)}
    with pytest.raises(LLMInternalsError, match="same bytes"):
        Tokenizer({**base, 256: b"a"})
    with pytest.raises(LLMInternalsError, match="not in the vocabulary"):
        Tokenizer(base, [(97, 98)])
    with pytest.raises(LLMInternalsError, match="also ordinary tokens"):
        Tokenizer(base, special_tokens={EOT: 5})
    for specials in ({"": 300}, {EOT: -1}, {EOT: 2**21}, {EOT: None}):
        with pytest.raises(LLMInternalsError, match="special token"):
            Tokenizer(base, special_tokens=specials)
    with pytest.raises(LLMInternalsError, match="not an integer in 0..1114111"):
        Tokenizer({**base, -5: b"ab"})
    with pytest.raises(LLMInternalsError, match="not non-empty bytes"):
        Tokenizer({**base, 300: b""})


def test_gpt4_pattern_survives_the_trip_through_hf(python_source, tmp_path):
    """Oniguruma reads cl100k's `\\p{N}{1,3}+` as a repeated group; the export translates it."""
    from llm_internals.tokenizer import GPT4_PATTERN, train_bpe

    from .conftest import tiktoken_encoding

    tok = train_bpe(python_source, 600, pattern="gpt4")
    hf = hf_from_ours(tok)
    text = "x = 1234567 + 89\nfor i in range(100000):  pass"
    assert hf.encode(text).ids == tok.encode(text) == tiktoken_encoding(tok).encode(text)
    tok.to_hf(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path).pattern == GPT4_PATTERN


def test_nfc_normalizer_from_hf_encodes_like_hf(python_source, tmp_path):
    from tokenizers import normalizers

    from .conftest import hf_train

    hf = hf_train(python_source + MULTILINGUAL, 600)
    hf.normalizer = normalizers.NFC()
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    assert ours.normalization == "NFC"
    decomposed = "cafe\u0301 e\u0301te\u0301 A\u030a " + MULTILINGUAL
    assert ours.encode(decomposed) == hf.encode(decomposed).ids
    assert ours.encode_batch([decomposed, "n\u0303"]) == [
        e.ids for e in hf.encode_batch([decomposed, "n\u0303"])
    ]
    ours.save(tmp_path / "own.json")
    assert Tokenizer.load(tmp_path / "own.json").encode(decomposed) == ours.encode(decomposed)
    _same(ours, Tokenizer.from_hf(ours.to_hf()))
