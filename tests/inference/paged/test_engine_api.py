"""The engine's step-level API: rejection, abort, parallel sampling with copy-on-write, seeded
sampling, text streaming and stops, statistics and metrics, loading from a checkpoint path."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.generate import generate
from llm_internals.inference.paged import LLM, EngineStats, RequestOutput
from llm_internals.inference.params import SamplingParams
from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.tokenizer import train_bpe

TEXT = "To be, or not to be, that is the question. " * 20 + "Whether 'tis nobler in the mind."


@pytest.fixture(scope="module")
def text_model():
    tok = train_bpe(TEXT, 300)
    torch.manual_seed(2)
    config = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, max_seq_len=96)  # fmt: skip
    return DecoderLM(config).double().eval(), tok


def drain(llm, limit=1000):
    outputs = []
    for _ in range(limit):
        if not llm.has_unfinished():
            return outputs
        outputs += llm.step()
    raise AssertionError("engine did not finish")


def test_requests_that_can_never_fit_are_rejected_and_others_continue(tiny_model, greedy_reference):
    llm = LLM(tiny_model, block_size=4, num_blocks=5, max_num_seqs=4, max_num_batched_tokens=16)
    llm.add_request("ok", [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=6))
    llm.step()
    before = (llm.stats(), llm.block_tables())
    with pytest.raises(LLMInternalsError, match="whole pool has 5"):
        llm.add_request("big", list(range(15)), SamplingParams(max_tokens=8))  # 22 slots > 20
    with pytest.raises(
        LLMInternalsError, match="has 65 tokens, more than the model's context of 64"
    ):
        llm.add_request("long", [1] * 65, SamplingParams(max_tokens=1))
    with pytest.raises(LLMInternalsError, match="outside the vocabulary"):
        llm.add_request("bad", [1, 48], SamplingParams())
    with pytest.raises(LLMInternalsError, match="empty"):
        llm.add_request("empty", [], SamplingParams())
    with pytest.raises(LLMInternalsError, match="no tokenizer"):
        llm.add_request("text", "hello", SamplingParams())
    with pytest.raises(LLMInternalsError, match="n=5 samples exceed max_num_seqs=4"):
        llm.add_request("many", [1, 2], SamplingParams(n=5))
    with pytest.raises(LLMInternalsError, match="already running"):
        llm.add_request("ok", [1], SamplingParams())
    assert (llm.stats(), llm.block_tables()) == before  # nothing changed
    llm.add_request("fits", list(range(14)), SamplingParams(temperature=0.0, max_tokens=7))
    outputs = drain(llm)
    final = {o.request_id: o for o in outputs if o.finished}
    assert final["ok"].token_ids == greedy_reference(tiny_model, [1, 2, 3], 6)
    assert final["fits"].token_ids == greedy_reference(tiny_model, list(range(14)), 7)


def test_engine_options_are_checked(tiny_model):
    with pytest.raises(LLMInternalsError, match="max_num_batched_tokens=4 is below"):
        LLM(tiny_model, max_num_seqs=8, max_num_batched_tokens=4)
    with pytest.raises(LLMInternalsError, match="not both"):
        LLM(tiny_model, num_blocks=4, kv_cache_gb=1.0)
    with pytest.raises(LLMInternalsError, match="block_size"):
        LLM(tiny_model, block_size=0)
    with pytest.raises(LLMInternalsError, match="holds no block"):
        LLM(tiny_model, kv_cache_gb=1e-9)


def test_pool_sized_from_a_memory_budget(tiny_model):
    llm = LLM(tiny_model, block_size=8, kv_cache_gb=0.001)
    config = tiny_model.config
    per_block = 2 * config.n_layers * 8 * config.n_kv_heads * config.head_dim * 8  # float64
    assert llm.stats().num_blocks == int(0.001 * 2**30 // per_block)
    assert llm.stats().kv_cache_bytes == llm.stats().num_blocks * per_block


def test_abort_frees_blocks_and_reports_abort(tiny_model, invariants, greedy_reference):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, max_num_seqs=4, max_num_batched_tokens=32)
    llm.add_request("a", list(range(9)), SamplingParams(temperature=0.0, max_tokens=20))
    llm.add_request("b", list(range(5, 12)), SamplingParams(temperature=0.0, max_tokens=20))
    for _ in range(3):
        llm.step()
    held = {r: t for (r, _), t in llm.block_tables().items()}
    assert held["a"] and held["b"]
    used = llm.stats().blocks_used
    llm.abort("a")
    llm.abort("no-such-request")  # ignored
    invariants(llm)
    assert llm.stats().blocks_used == used - len(held["a"])
    assert all(llm.block_manager.blocks[b].ref_count == 0 for b in held["a"])
    assert ("a", 0) not in llm.block_tables()
    outputs = llm.step()
    aborted = [o for o in outputs if o.request_id == "a"]
    assert len(aborted) == 1 and aborted[0].finish_reason == "abort" and aborted[0].finished
    final = [o for o in drain(llm) if o.finished]
    assert final[-1].token_ids == greedy_reference(tiny_model, list(range(5, 12)), 20)
    assert llm.stats().blocks_used == 0 and llm.stats().num_requests_aborted == 1


def test_abort_of_a_waiting_request(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=20, max_num_seqs=1, max_num_batched_tokens=8)
    llm.add_request("first", [1, 2], SamplingParams(max_tokens=3))
    llm.add_request("second", [3, 4], SamplingParams(max_tokens=3))
    llm.step()
    llm.abort("second")
    assert [o.finish_reason for o in llm.step() if o.request_id == "second"] == ["abort"]
    assert all(o.request_id == "first" for o in drain(llm))


def test_parallel_sampling_shares_the_prompt_blocks_copy_on_write(tiny_model, invariants):
    llm = LLM(tiny_model, block_size=4, num_blocks=40, max_num_seqs=4, max_num_batched_tokens=32)
    prompt = list(range(1, 11))  # 10 tokens: 2 full blocks and a partial third
    llm.add_request("p", prompt, SamplingParams(temperature=1.0, seed=3, n=3, max_tokens=8))
    first = llm.step()  # prefill, then the fork into 3 samples
    assert sorted(o.index for o in first) == [0, 1, 2]
    tables = llm.block_tables()
    assert tables[("p", 0)] == tables[("p", 1)] == tables[("p", 2)]
    assert [llm.block_manager.blocks[b].ref_count for b in tables[("p", 0)]] == [3, 3, 3]
    llm.step()  # each sample writes its first token into the shared partial block
    invariants(llm)
    tables = llm.block_tables()
    assert tables[("p", 0)][:2] == tables[("p", 1)][:2] == tables[("p", 2)][:2]
    assert len({tables[("p", i)][2] for i in range(3)}) == 3  # the partial block was copied
    every = first + drain(llm)
    outputs = [o for o in every if o.finished]
    assert all(o.request_finished == o.finished for o in every)  # all 3 end at max_tokens
    samples = {o.index: o.token_ids for o in outputs}
    assert len(samples) == 3 and len({tuple(t) for t in samples.values()}) > 1
    # each sample is reproducible: sample i draws from seed + i, as `generate` does with it
    for index, tokens in samples.items():
        expected = generate(tiny_model, None, prompt, max_new_tokens=8, eos_token_id=None,
                            temperature=1.0, seed=3 + index).token_ids  # fmt: skip
        assert tokens == expected
    assert llm.stats().blocks_used == 0


def test_greedy_parallel_samples_are_identical(tiny_model, greedy_reference):
    llm = LLM(tiny_model, block_size=4, num_blocks=30, max_num_seqs=6, max_num_batched_tokens=32)
    outputs = llm.generate([[5, 6, 7], [8, 9]], SamplingParams(temperature=0.0, n=3, max_tokens=9))
    assert [o.index for o in outputs] == [0, 1, 2, 0, 1, 2]
    assert all(o.token_ids == greedy_reference(tiny_model, [5, 6, 7], 9) for o in outputs[:3])
    assert all(o.token_ids == greedy_reference(tiny_model, [8, 9], 9) for o in outputs[3:])


def test_seeded_sampling_equals_generate_whatever_the_batch(text_model):
    model, tok = text_model
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=11, max_tokens=15)
    expected = generate(model, tok, "To be", max_new_tokens=15, params=params, eos_token_id=None)
    llm = LLM(model, tok, block_size=4, num_blocks=60, max_num_batched_tokens=40,
              eos_token_id=None)  # fmt: skip
    others = SamplingParams(temperature=1.0, max_tokens=12)
    outputs = llm.generate(["the question", "To be", "Whether"], [others, params, others])
    assert outputs[1].token_ids == expected.token_ids
    assert outputs[1].text == expected.text == tok.decode(expected.token_ids)


def test_streamed_text_stop_strings_and_eos(text_model):
    model, tok = text_model
    llm = LLM(model, tok, block_size=4, num_blocks=80, eos_token_id=None)
    free = llm.generate("To be", SamplingParams(temperature=0.0, max_tokens=30))[0]
    assert free.text == tok.decode(free.token_ids) and len(free.text) > 8
    stop = free.text[4:7]
    cut = free.text[: free.text.index(stop)]
    llm.add_request("s", "To be", SamplingParams(temperature=0.0, max_tokens=30, stop=[stop]))
    outputs = drain(llm)
    assert "".join(o.new_text for o in outputs) == cut == outputs[-1].text
    assert outputs[-1].finish_reason == "stop"
    streamed = [t for o in outputs for t in o.new_token_ids]
    assert streamed == outputs[-1].token_ids
    eos = free.token_ids[3]
    with_eos = LLM(model, tok, block_size=4, num_blocks=80, eos_token_id=eos)
    out = with_eos.generate("To be", SamplingParams(temperature=0.0, max_tokens=30))[0]
    assert out.finish_reason == "eos" and out.token_ids == free.token_ids[:3]
    ignoring = with_eos.generate("To be", SamplingParams(temperature=0.0, max_tokens=30,
                                                         ignore_eos=True))[0]  # fmt: skip
    assert ignoring.token_ids == free.token_ids


def test_outputs_metrics_and_stats_during_a_run(tiny_model):
    llm = LLM(tiny_model, block_size=4, num_blocks=40, max_num_seqs=4, max_num_batched_tokens=32)
    prompts = {"x": list(range(1, 8)), "y": list(range(20, 33))}
    for request_id, prompt in prompts.items():
        llm.add_request(request_id, prompt, SamplingParams(temperature=0.0, max_tokens=6))
    stats = llm.stats()
    assert isinstance(stats, EngineStats) and stats.num_waiting == 2 and stats.blocks_used == 0
    outputs = llm.step()
    assert all(isinstance(o, RequestOutput) and len(o.new_token_ids) == 1 for o in outputs)
    stats = llm.stats()
    # K/V stored for the two prompts (7 + 13 tokens) in ceil(7/4) + ceil(13/4) = 6 blocks
    assert (stats.kv_slots_used, stats.kv_slots_allocated) == (20, 24)
    assert stats.kv_waste == pytest.approx(1 - 20 / 24)
    assert (
        stats.blocks_used == 6 and stats.blocks_used + stats.blocks_free + stats.blocks_cached == 40
    )
    rest = drain(llm)
    final = {o.request_id: o for o in rest if o.finished}
    for o in final.values():
        m = o.metrics
        assert len(m.token_latencies) == 6 and all(t >= 0 for t in m.token_latencies)
        assert m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finished_time
        assert m.time_to_first_token == pytest.approx(m.first_token_time - m.arrival_time)
    stats = llm.stats()
    assert stats.generated_tokens == 12 and stats.num_requests_finished == 2
    # K/V was stored for 7 + 5 and 13 + 5 tokens (the last token is never fed): its full
    # blocks, 3 + 4, stay cached
    assert stats.blocks_used == 0 and stats.blocks_cached == 3 + 4


def test_engine_from_an_hf_checkpoint_directory(tmp_path, greedy_reference):
    tok = train_bpe(TEXT, 300)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=299))  # fmt: skip
    hf.save_pretrained(tmp_path)
    tok.save(tmp_path / "tokenizer.json")
    llm = LLM(str(tmp_path), block_size=4, num_blocks=50)
    assert llm.eos_ids == frozenset([299])
    outs = llm.generate(["To be", "that is"], SamplingParams(temperature=0.0, max_tokens=8))
    for prompt, out in zip(["To be", "that is"], outs, strict=True):
        ids = tok.encode(prompt)
        assert out.prompt_token_ids == ids
        expected = generate(llm.model, tok, ids, max_new_tokens=8, eos_token_id=299)
        assert out.token_ids == expected.token_ids and out.text == expected.text
