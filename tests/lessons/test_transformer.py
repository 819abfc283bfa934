"""The transformer lesson's numbers: embeddings and attention recomputed with plain torch from the
same weights, shapes derived from the config, parameter counts against HF models on the meta
device (no memory allocated)."""

import ast
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from llm_internals.explain.lesson import Table
from llm_internals.explain.lessons import transformer as lesson_module
from llm_internals.explain.transformer_runs import SEED, tiny_seq2seq_config


@pytest.fixture(scope="module")
def steps():
    lesson = lesson_module.build()
    return {s.title: s.steps for s in lesson.sections}


def _ids():
    return lesson_module.tokenizer().encode(lesson_module.PROMPT)


def test_tokens_round_trip(steps):
    table = steps["Tokenization, embedding, positional encoding"][0].values["tokens"]
    pieces = [ast.literal_eval(piece) for piece, _ in table.rows]  # repr() of ASCII strings
    assert "".join(pieces) == lesson_module.PROMPT
    tok = lesson_module.tokenizer()
    assert [tok.decode([i]) for _, i in table.rows] == pieces
    assert all(0 <= i < lesson_module.VOCAB_SIZE for _, i in table.rows)


def test_embedding_and_head_weights_match_plain_torch(steps):
    ids = _ids()
    model, _ = lesson_module.run_decoder(ids)
    with torch.no_grad():
        h0 = model.tok_emb.weight[ids] + model.pos_emb.weight[: len(ids)]
        shown = steps["Tokenization, embedding, positional encoding"][1].values["h_0"]
        assert torch.allclose(shown, h0, atol=1e-6)
        block = model.blocks[0]
        x = F.layer_norm(h0, (16,), block.norm1.weight, block.norm1.bias, 1e-5)
        heads = lambda t: t.view(len(ids), 4, 4).transpose(0, 1)  # noqa: E731
        q = heads(F.linear(x, block.attn.q_proj.weight, block.attn.q_proj.bias))
        k = heads(F.linear(x, block.attn.k_proj.weight, block.attn.k_proj.bias))
        scores = q @ k.transpose(1, 2) / math.sqrt(4)
        future = torch.ones(len(ids), len(ids)).triu(1).bool()
        weights = torch.softmax(scores.masked_fill(future, -math.inf), -1)
    values = steps["Attention and multi-head"][0].values
    for h in range(4):
        assert torch.allclose(values[f"head {h} weights"], weights[h], atol=1e-6)


def test_data_flow_shapes_follow_the_config(steps):
    table = steps["The data flow, shape by shape"][0].values["steps"]
    t, d, heads, hd, ff, vocab = len(_ids()), 16, 4, 4, 64, lesson_module.VOCAB_SIZE
    expected = {
        "token_embedding": (1, t, d), "embedding": (1, t, d), "norm_output": (1, t, d),
        "q": (1, heads, t, hd), "k": (1, heads, t, hd), "v": (1, heads, t, hd),
        "scores": (1, heads, t, t), "weights": (1, heads, t, t), "output": (1, heads, t, hd),
        "attention_output": (1, t, d), "residual_after_attention": (1, t, d),
        "ffn_up": (1, t, ff), "ffn_activated": (1, t, ff), "ffn_output": (1, t, d),
        "block_output": (1, t, d), "logits": (1, t, vocab),
    }  # fmt: skip
    names = [name for _, name, _ in table.rows]
    assert names.count("block_output") == 2 and names[-1] == "logits"
    for _, name, shape in table.rows:
        assert shape == str(expected[name])


def test_encoder_decoder_attention_matches_plain_torch(steps):
    ids = _ids()
    src = lesson_module.tokenizer().encode(lesson_module.SOURCE)
    torch.manual_seed(SEED)
    from llm_internals.models.seq2seq import Seq2SeqLM

    model = Seq2SeqLM(tiny_seq2seq_config()).eval()
    captured = {}
    block = model.decoder_blocks[-1]
    for name in ("self_attn", "cross_attn"):
        getattr(block, name).register_forward_hook(
            lambda mod, args, out, name=name: captured.__setitem__(name, args)
        )
    with torch.no_grad():
        model(torch.tensor([src]), torch.tensor([ids]))

        def weights(attn, x, kv, causal):
            q = F.linear(x[0], attn.q_proj.weight, attn.q_proj.bias).view(-1, 4, 4)[:, 0]
            k = F.linear(kv[0], attn.k_proj.weight, attn.k_proj.bias).view(-1, 4, 4)[:, 0]
            scores = q @ k.T / 2
            if causal:
                scores = scores.masked_fill(torch.ones_like(scores).triu(1).bool(), -math.inf)
            return torch.softmax(scores, -1)

        (x,) = captured["self_attn"]
        self_w = weights(block.self_attn, x, x, True)
        x, memory = captured["cross_attn"]
        cross_w = weights(block.cross_attn, x, memory, False)
    values = steps["Encoder and decoder"][0].values
    assert values["encoder output shape"] == str((1, len(src), 16))
    assert torch.allclose(values["decoder self-attention (head 0)"], self_w, atol=1e-6)
    assert torch.allclose(values["cross-attention (head 0)"], cross_w, atol=1e-6)
    assert values["cross-attention (head 0)"].shape == (len(ids), len(src))


def _hf_count(model_cls, config):
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_hf_models(steps):
    table = steps["The three variants"][0].values["parameters"]
    assert isinstance(table, Table)
    totals = {row[0]: row[-1] for row in table.rows}
    for row in table.rows:
        assert sum(row[2:-1]) == row[-1]
    assert totals["BERT-base"] == _hf_count(transformers.BertModel, transformers.BertConfig())
    gpt2 = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                                   n_head=12)  # fmt: skip
    assert totals["GPT-2 (124M)"] == _hf_count(transformers.GPT2LMHeadModel, gpt2)
    llama = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
    )  # fmt: skip
    assert totals["Llama-3-8B"] == _hf_count(transformers.LlamaForCausalLM, llama)
    t5 = transformers.T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                               num_heads=12, feed_forward_proj="relu")  # fmt: skip
    assert totals["T5-base"] == _hf_count(transformers.T5ForConditionalGeneration, t5)


def test_why_powerful_weights_match_plain_torch(steps):
    ids = _ids()
    model, _ = lesson_module.run_decoder(ids)
    p = dict(model.named_parameters())
    d, heads = model.config.d_model, model.config.n_heads
    with torch.no_grad():
        x = p["tok_emb.weight"][ids] + p["pos_emb.weight"][: len(ids)]
        x = F.layer_norm(x, (d,), p["blocks.0.norm1.weight"], p["blocks.0.norm1.bias"], 1e-5)
        q = F.linear(x, p["blocks.0.attn.q_proj.weight"], p["blocks.0.attn.q_proj.bias"])
        k = F.linear(x, p["blocks.0.attn.k_proj.weight"], p["blocks.0.attn.k_proj.bias"])
        head = d // heads
        scores = q[-1, :head] @ k[:, :head].T / math.sqrt(head)  # last token, head 1
        expected = torch.softmax(scores, dim=-1)
    values = steps["Why it is so powerful"][0].values
    assert torch.allclose(values["layer 1, head 1: last token's attention weights"], expected,
                          atol=1e-6)  # fmt: skip
    rows = values["RNN vs attention"].rows
    n = len(ids)
    assert rows == [
        ["steps from the first token to the last", n - 1, 1],
        ["positions one layer lets the last token read", 1, n],
        ["steps per layer that must run one after another", n, 1],
    ]
