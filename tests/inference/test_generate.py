"""generate(): cache == no cache == HF transformers generate (greedy), padding, sampling, stops,
bad input, streaming."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate, stream
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM, ModelConfig, load_pretrained
from llm_internals.tokenizer import train_bpe

VOCAB = 128
EOS = 3
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")
HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}
PROMPTS = [[5, 17, 99, 42, 8, 77, 61], [12, 4], [100, 33, 2, 90]]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second torch thread only adds waiting (badly so on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_hf(family: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A 2-layer random HF decoder (GQA where the family has it), weights perturbed from init."""
    torch.manual_seed(seed)
    if family == "gpt2":
        kwargs = dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                      bos_token_id=0, eos_token_id=EOS) | overrides  # fmt: skip
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    else:
        kwargs = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=96, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=EOS) | overrides  # fmt: skip
        config_class, model_class = HF_CLASSES[family]
        model = model_class(config_class(**kwargs))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def hf_pairs(tmp_path_factory):
    """family -> (HF model, our model loaded from its saved checkpoint)."""
    pairs = {}
    for family in FAMILIES:
        hf = tiny_hf(family)
        path = tmp_path_factory.mktemp(family)
        hf.save_pretrained(path)
        pairs[family] = (hf, path)
    return pairs


def hf_greedy(hf, prompts, max_new_tokens, eos=EOS):
    """HF generate on a left-padded batch; per row the new tokens up to and including eos."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos, pad_token_id=0, use_cache=True,
        )  # fmt: skip
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def ours_with_eos(result, eos=EOS):
    return result.token_ids + ([eos] if result.finish_reason == "eos" else [])


@pytest.mark.parametrize(("attn_impl", "fused_ops"), [("scratch", False), ("sdpa", True)])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_hf_generate_single_and_left_padded_batch(
    hf_pairs, family, attn_impl, fused_ops
):
    hf, path = hf_pairs[family]
    ours = load_pretrained(path, attn_impl=attn_impl, fused_ops=fused_ops)
    new = 16
    single = generate(ours, None, PROMPTS[0], max_new_tokens=new, eos_token_id=EOS)
    assert ours_with_eos(single) == hf_greedy(hf, PROMPTS[:1], new)[0]
    # An eos that row 1 emits early, so rows finish at different steps (one leaves the batch).
    free = generate(ours, None, PROMPTS, max_new_tokens=new, eos_token_id=None)
    eos = free[1].token_ids[4]
    batch = generate(ours, None, PROMPTS, max_new_tokens=new, eos_token_id=eos)
    uncached = generate(ours, None, PROMPTS, max_new_tokens=new, eos_token_id=eos, use_cache=False)
    assert batch[1].finish_reason == "eos" and len(batch[1].token_ids) <= 4
    assert [ours_with_eos(r, eos) for r in batch] == hf_greedy(hf, PROMPTS, new, eos=eos)
    assert [r.token_ids for r in uncached] == [r.token_ids for r in batch]
    assert [r.finish_reason for r in uncached] == [r.finish_reason for r in batch]


def test_mistral_sliding_window_matches_hf(tmp_path):
    hf = tiny_hf("mistral", seed=1, sliding_window=6)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert ours.config.sliding_window == 6
    expected = hf_greedy(hf, PROMPTS[:1], 20)[0]
    cached = generate(ours, None, PROMPTS[0], max_new_tokens=20, eos_token_id=EOS)
    uncached = generate(ours, None, PROMPTS[0], max_new_tokens=20, eos_token_id=EOS,
                        use_cache=False)  # fmt: skip
    assert ours_with_eos(cached) == expected
    assert cached.token_ids == uncached.token_ids


OUR_CONFIGS = {
    "gpt2-style": dict(
        position="learned",
        norm="layernorm",
        ffn="mlp",
        activation="gelu",
        qkv_bias=True,
        tie_embeddings=True,
    ),  # fmt: skip
    "llama-gqa": dict(n_kv_heads=2),
    "mqa-qknorm": dict(n_kv_heads=1, qk_norm=True),
}


@pytest.mark.parametrize("name", OUR_CONFIGS)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_our_models_cache_equals_no_cache_and_single_rows(name, padding_side):
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4,
                                  max_seq_len=64, **OUR_CONFIGS[name]))  # fmt: skip
    batch = generate(model, None, PROMPTS, max_new_tokens=20, padding_side=padding_side)
    uncached = generate(model, None, PROMPTS, max_new_tokens=20, padding_side=padding_side,
                        use_cache=False)  # fmt: skip
    alone = [generate(model, None, p, max_new_tokens=20) for p in PROMPTS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in uncached]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    assert all(len(r.token_ids) == 20 and r.finish_reason == "length" for r in batch)


def test_cache_does_not_change_the_logits_of_any_step():
    """Stronger than equal argmaxes: the last-position logits of each cached step equal a full
    recomputation of the sequence so far."""
    from llm_internals.inference.kv_cache import ContiguousKVCache

    torch.manual_seed(1)
    model = DecoderLM(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=3, n_heads=4,
                                  n_kv_heads=2, max_seq_len=64)).eval()  # fmt: skip
    seq = torch.tensor([PROMPTS[0]])
    cache = ContiguousKVCache.for_model(model, 1, 40)
    with torch.no_grad():
        logits = model(seq, cache=cache)[:, -1]
        for _ in range(12):
            full = model(seq)[:, -1]
            assert (logits - full).abs().max().item() < 1e-5
            nxt = logits.argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
            logits = model(nxt, cache=cache)[:, -1]


# ----- sampling, stops, streaming --------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model():
    """A tiny BPE tokenizer trained live and a random model over its vocabulary."""
    text = "To be, or not to be, that is the question. " * 20 + "Whether 'tis nobler in the mind."
    tok = train_bpe(text, 300)
    torch.manual_seed(2)
    model = DecoderLM(ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4,
                                  max_seq_len=96))  # fmt: skip
    return model, tok


def test_seeded_sampling_is_reproducible_and_batch_independent(text_model):
    model, tok = text_model
    kwargs = dict(max_new_tokens=25, temperature=1.0, top_k=50, top_p=0.95, seed=1234)
    first = generate(model, tok, "To be", **kwargs)
    again = generate(model, tok, "To be", **kwargs)
    other = generate(model, tok, "To be", **(kwargs | {"seed": 99}))
    in_batch = generate(model, tok, ["the question", "To be"], **kwargs)[1]
    uncached = generate(model, tok, "To be", use_cache=False, **kwargs)
    assert first.token_ids == again.token_ids == in_batch.token_ids == uncached.token_ids
    assert first.token_ids != other.token_ids
    assert first.text == tok.decode(first.token_ids)


def test_streaming_yields_the_same_tokens_and_text(text_model):
    model, tok = text_model
    result = generate(model, tok, ["To be", "Whether"], max_new_tokens=20, seed=5, temperature=0.9)
    chunks = list(stream(model, tok, ["To be", "Whether"], max_new_tokens=20, seed=5,
                         temperature=0.9))  # fmt: skip
    for i, r in enumerate(result):
        mine = [c for c in chunks if c.index == i]
        assert [c.token_id for c in mine] == r.token_ids
        assert "".join(c.text for c in mine) == r.text
        assert [c.finish_reason for c in mine] == [None] * 19 + ["length"]


def test_stop_string_across_tokens_cuts_the_text(text_model):
    model, tok = text_model
    free = generate(model, tok, "To be", max_new_tokens=40, eos_token_id=None)
    assert len(free.text) > 12
    stop = free.text[6:12]  # a string that appears in the greedy output, likely over 2 tokens
    cut = generate(model, tok, "To be", max_new_tokens=40, eos_token_id=None,
                   params=SamplingParams(temperature=0.0, stop=(stop,)))  # fmt: skip
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    streamed = "".join(c.text for c in stream(model, tok, "To be", max_new_tokens=40,
                                              eos_token_id=None, temperature=0.0,
                                              stop=(stop,)))  # fmt: skip
    assert streamed == cut.text


def test_eos_and_stop_token_are_not_part_of_the_output(text_model):
    model, tok = text_model
    free = generate(model, tok, "To be", max_new_tokens=30, eos_token_id=None)
    target = free.token_ids[4]
    first = free.token_ids.index(target)
    as_eos = generate(model, tok, "To be", max_new_tokens=30, eos_token_id=target)
    params = SamplingParams(temperature=0.0, stop_token_ids=(target,))
    as_stop = generate(model, tok, "To be", max_new_tokens=30, eos_token_id=None, params=params)
    assert as_eos.finish_reason == "eos" and as_stop.finish_reason == "stop"
    assert as_eos.token_ids == as_stop.token_ids == free.token_ids[:first]
    assert as_eos.text == tok.decode(free.token_ids[:first])


def test_generation_past_the_context_stops_with_reason_context(text_model):
    model, tok = text_model
    context = model.config.max_seq_len
    prompt = list(range(10, 10 + context - 4))
    for use_cache in (True, False):
        result = generate(model, None, prompt, max_new_tokens=50, use_cache=use_cache)
        # tokens at positions context-4 .. context: the last one is never fed back
        assert result.finish_reason == "context" and len(result.token_ids) == 5
    full = generate(model, None, list(range(10, 10 + context)), max_new_tokens=3)
    assert full.finish_reason == "context" and len(full.token_ids) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompt=""), "prompt 0 is empty"),
        (dict(prompt=[]), "non-empty"),
        (dict(prompt=["fine", ""]), "prompt 1 is empty"),
        (dict(prompt=list(range(97))), "more than the model's context of 96"),
        (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
        (dict(max_new_tokens=-3), "max_new_tokens must be a positive integer"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(padding_side="middle"), "padding_side"),
        (dict(nucleus=0.5), "unknown sampling parameter"),
    ],
)
def test_bad_input_raises_a_clear_error(text_model, kwargs, message):
    model, tok = text_model
    kwargs = {"prompt": "To be", "max_new_tokens": 5} | kwargs
    with pytest.raises(LLMInternalsError, match=message):
        generate(model, tok, **kwargs)
    with pytest.raises(LLMInternalsError, match=message):
        stream(model, tok, **kwargs)  # errors come before the first token, not on iteration


# ----- the decode weight layout and the CLI ----------------------------------------------------
def test_decode_layout_keeps_values_and_outputs(text_model, tmp_path):
    model, tok = text_model
    from llm_internals.inference.decode_layout import use_decode_layout
    from llm_internals.models import load_checkpoint, save_checkpoint

    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = generate(model, tok, "To be", max_new_tokens=15).token_ids
    relaid = use_decode_layout(DecoderLM(model.config))
    relaid.load_state_dict(before)
    use_decode_layout(relaid)
    assert not relaid.blocks[0].ffn.down_proj.weight.is_contiguous()  # column-major now
    assert all(torch.equal(v, before[k]) for k, v in relaid.state_dict().items())
    assert generate(relaid, tok, "To be", max_new_tokens=15).token_ids == expected
    save_checkpoint(relaid, tmp_path)
    assert generate(load_checkpoint(tmp_path), tok, "To be", max_new_tokens=15).token_ids == (
        expected
    )


def printable(text: str) -> str:
    """What a terminal shows: random tiny models emit control characters, which rich drops."""
    return "".join(c for c in text if c.isprintable() or c == "\n")


def test_cli_generate_streams_from_our_checkpoint_and_an_hf_directory(text_model, tmp_path, capsys):
    from llm_internals.cli import main
    from llm_internals.models import save_checkpoint

    model, tok = text_model
    save_checkpoint(model, tmp_path / "ours")
    tok.save(tmp_path / "ours" / "tokenizer.json")
    args = ["--prompt", "To be", "--max-new-tokens", "12", "--temperature", "0"]
    assert main(["generate", "--model", str(tmp_path / "ours"), *args]) == 0
    out = capsys.readouterr().out
    expected = generate(model, tok, "To be", max_new_tokens=12, eos_token_id=None)
    assert printable(out).startswith(printable("To be" + expected.text))
    assert "tokens/s" in out and "KV cache" in out
    assert main(["generate", "--model", str(tmp_path / "ours"), *args, "--no-cache"]) == 0
    assert printable(capsys.readouterr().out).startswith(printable("To be" + expected.text))

    hf = tiny_hf("gpt2", vocab_size=tok.vocab_size)
    hf.save_pretrained(tmp_path / "hf")
    tok.to_hf(tmp_path / "hf" / "tokenizer.json")
    assert main(["generate", "--model", str(tmp_path / "hf"), *args, "--seed", "3"]) == 0
    ids = torch.tensor([tok.encode("To be")])
    with torch.no_grad():
        hf_ids = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, eos_token_id=EOS, pad_token_id=0)  # fmt: skip
    new = hf_ids[0, ids.shape[1] :].tolist()
    new = new[: new.index(EOS)] if EOS in new else new
    assert printable(capsys.readouterr().out).startswith(printable("To be" + tok.decode(new)))


def test_cli_generate_errors_are_one_line(tmp_path, capsys):
    from llm_internals.cli import main

    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--model", str(tmp_path / "empty"), "--prompt", "x"]) == 2
    assert "has no config.json" in capsys.readouterr().out
