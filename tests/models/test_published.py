"""The table of published shapes, checked against HF transformers itself: each entry becomes an HF
config with AutoConfig.for_model and an HF model on the meta device (shapes only, no memory, so
Llama-3.1-405B is free); its parameters, by component, and its KV-cache bytes must equal what we
derive from the same fields."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.errors import LLMInternalsError
from llm_internals.inference.kv_memory import load_shape
from llm_internals.models import count_parameters
from llm_internals.models.params import ALL_COMPONENTS, count_t5_parameters
from llm_internals.models.published import (
    ALIASES,
    PUBLISHED,
    decoders,
    hf_config,
    kind,
    model_config,
    parameter_counts,
    resolve,
)

DECODERS = [repo for repo in PUBLISHED if kind(repo) == "decoder"]
WITH_MODEL_CONFIG = [repo for repo in DECODERS if PUBLISHED[repo]["model_type"] != "falcon"]


def hf_meta_model(repo: str, auto_class=transformers.AutoModelForCausalLM) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(**hf_config(repo))
    with torch.device("meta"):
        return auto_class.from_config(config)


def hf_components(model: torch.nn.Module, rules: list[tuple[str, str]]) -> dict[str, int]:
    """HF's parameters grouped by the first rule whose substring is in the name (HF's names,
    not ours: an independent view of which tensor belongs where)."""
    counts = dict.fromkeys(ALL_COMPONENTS, 0)
    for name, param in model.named_parameters():  # tied tensors are listed once
        component = next(c for part, c in rules if part in name)
        counts[component] += param.numel()
    counts["total"] = sum(counts.values())
    return counts


@pytest.mark.parametrize("repo", WITH_MODEL_CONFIG)
def test_decoder_counts_equal_hf_models_built_from_the_same_fields(repo):
    hf = hf_meta_model(repo)
    counts = parameter_counts(repo)
    assert counts["total"] == sum(p.numel() for p in hf.parameters())
    assert counts["other"] == 0
    assert {k: v for k, v in counts.items() if k != "other"} == count_parameters(model_config(repo))


def test_bert_counts_equal_hf_bert_model_with_pooler_by_component():
    repo = resolve("bert-base")
    hf = hf_meta_model(repo, transformers.AutoModel)  # BertModel: encoder and pooler
    rules = [("embeddings.LayerNorm", "norms"), ("embeddings", "embeddings"),
             ("LayerNorm", "norms"), ("attention", "attention"), ("intermediate", "ffn"),
             ("output.dense", "ffn"), ("pooler", "other")]  # fmt: skip
    assert parameter_counts(repo) == hf_components(hf, rules)


def test_t5_counts_equal_hf_t5_by_component():
    repo = resolve("t5-base")
    hf = hf_meta_model(repo, transformers.AutoModelForSeq2SeqLM)
    rules = [("relative_attention_bias", "other"), ("layer_norm", "norms"),
             ("SelfAttention", "attention"), ("EncDecAttention", "attention"),
             ("DenseReluDense", "ffn"), ("shared", "embeddings"), ("embed_tokens", "embeddings"),
             ("lm_head", "lm_head")]  # fmt: skip
    assert parameter_counts(repo) == hf_components(hf, rules)


@pytest.mark.parametrize(
    "changes", [{"feed_forward_proj": "gated-gelu"}, {"num_decoder_layers": 3, "d_kv": 8}]
)
def test_t5_variants_gated_ffn_and_other_decoder_depth(changes):
    fields = {**hf_config("t5-base"), "num_layers": 2, "d_model": 32, "d_ff": 48, **changes}
    config = transformers.AutoConfig.for_model(**fields)
    with torch.device("meta"):
        hf = transformers.AutoModelForSeq2SeqLM.from_config(config)
    assert count_t5_parameters(fields)["total"] == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("repo", DECODERS)
def test_kv_bytes_equal_an_independent_formula_on_the_hf_config(repo):
    hf = transformers.AutoConfig.for_model(**hf_config(repo))
    if getattr(hf, "multi_query", False) and not hf.new_decoder_architecture:
        kv_heads = 1  # as HF's FalconAttention
    else:
        kv_heads = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    element = (hf.dtype or torch.float32).itemsize  # no dtype in config.json: float32
    expected = 2 * hf.num_hidden_layers * kv_heads * head_dim * element
    if getattr(hf, "kv_lora_rank", None):  # MLA caches the latent and the shared rope key
        expected = hf.num_hidden_layers * (hf.kv_lora_rank + hf.qk_rope_head_dim) * element
    for name in [repo, *(alias for alias, target in ALIASES.items() if target == repo)]:
        assert load_shape(name).bytes_per_token == expected


def test_aliases_and_repo_ids_resolve_case_insensitively():
    assert set(ALIASES.values()) <= set(PUBLISHED)
    for alias, repo in ALIASES.items():
        assert resolve(alias) == resolve(alias.upper()) == resolve(repo.lower()) == repo
    assert set(decoders()) <= set(ALIASES) and "bert-base" not in decoders()
    assert model_config("gpt2-124m") == model_config("openai-community/gpt2")


def test_unknown_name_lists_the_choices():
    with pytest.raises(LLMInternalsError, match="unknown published model 'llama-9'") as error:
        resolve("llama-9")
    assert "llama-3-8b" in error.value.hint and "qwen3-0.6b" in error.value.hint


def test_falcon_has_a_kv_shape_but_no_model_config():
    assert load_shape("falcon-7b").kv_heads == 1
    with pytest.raises(LLMInternalsError, match="model_type 'falcon' is not supported"):
        parameter_counts("falcon-7b")


def test_hf_config_is_a_copy():
    fields = hf_config("llama-3.1-405b")
    fields["rope_scaling"]["factor"] = 1.0
    assert PUBLISHED["meta-llama/Llama-3.1-405B"]["rope_scaling"]["factor"] == 8.0


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b"])  # GQA ones
def test_moe_total_is_hfs_and_active_drops_the_idle_experts(name):
    """Total: HF's model built from the fields. Active: that total less the E - k routed
    experts (3 d f_e each) that a token skips in every layer, from the config fields."""
    from llm_internals.models.published import active_parameters

    fields = hf_config(name)
    total = sum(p.numel() for p in hf_meta_model(name).parameters())
    experts = fields.get("num_local_experts") or fields["num_experts"]
    width = fields.get("moe_intermediate_size") or fields["intermediate_size"]
    idle = (experts - fields["num_experts_per_tok"]) * 3 * fields["hidden_size"] * width
    assert parameter_counts(name)["total"] == total
    assert active_parameters(name) == total - fields["num_hidden_layers"] * idle
    assert active_parameters("llama-3-8b") == parameter_counts("llama-3-8b")["total"]


def test_kv_memory_prints_total_and_active_parameters(capsys):
    from llm_internals.cli import main
    from llm_internals.models.published import active_parameters

    assert main(["kv-memory", "mixtral-8x7b"]) == 0
    out = capsys.readouterr().out
    total, active = parameter_counts("mixtral-8x7b")["total"], active_parameters("mixtral-8x7b")
    assert f"parameters: {total:,} total, {active:,} active per token" in out
    assert main(["kv-memory", "all"]) == 0
    table = capsys.readouterr().out.split("Parameters")[1]
    assert all(name in table for name in ("mixtral-8x7b", "qwen3-30b-a3b", "llama-3-8b"))
