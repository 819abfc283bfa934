"""The one table of published model shapes: HF config.json fields, keyed by Hugging Face repo id.

Each entry holds the fields of the model's public config.json that decide its shape and dtype,
spelled as published (GPT-2's n_embd, Llama's hidden_size, T5's d_kv, "torch_dtype"); no weights.
Everything else is derived from these fields by the code that reads real checkpoints, so a table
entry and a downloaded config.json go through the same path:

    model_config(name)      our ModelConfig, by the HF import converter (models/hf.py)
    parameter_counts(name)  by component, from models/params.py (BERT and T5 included)
    active_parameters(name) what one token uses: all but the routed experts it skips (MoE)
    hf_config(name)         the fields themselves; inference/kv_memory.py reads KV shapes from them

Short aliases ("gpt2", "llama-3-8b") name the same entries as the repo ids, case-insensitively.
Falcon is here for its KV cache (multi-query attention) only: ModelConfig has no parallel
attention block, so it has no ModelConfig or parameter count.
"""

from __future__ import annotations

import copy
from typing import Any

from llm_internals.errors import LLMInternalsError
from llm_internals.models.config import ModelConfig
from llm_internals.models.hf import _converter_for_type
from llm_internals.models.params import (
    count_active_parameters,
    count_bert_parameters,
    count_parameters,
    count_t5_parameters,
    with_all_components,
)

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
          "attention_bias": False, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
          "torch_dtype": "bfloat16"}  # fmt: skip
_LLAMA3 = {**_LLAMA, "vocab_size": 128256, "max_position_embeddings": 8192,
           "num_key_value_heads": 8, "rope_theta": 500000.0}  # fmt: skip
_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
          "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 131072,
          "sliding_window": 131072, "use_sliding_window": False,
          "torch_dtype": "bfloat16"}  # fmt: skip
_GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50257,
         "n_positions": 1024, "n_ctx": 1024, "activation_function": "gelu_new",
         "layer_norm_epsilon": 1e-05}  # fmt: skip

PUBLISHED: dict[str, dict[str, Any]] = {
    # GPT-2 config.json has no torch_dtype: the weights are float32.
    "openai-community/gpt2": {**_GPT2, "n_embd": 768, "n_layer": 12, "n_head": 12},
    "openai-community/gpt2-xl": {**_GPT2, "n_embd": 1600, "n_layer": 48, "n_head": 25},
    "HuggingFaceTB/SmolLM-135M": {
        **_LLAMA, "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": True,
    },
    "HuggingFaceTB/SmolLM2-135M": {
        **_LLAMA, "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "rope_theta": 100000, "tie_word_embeddings": True,
    },
    "Qwen/Qwen2-0.5B": {
        **_QWEN2, "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_window_layers": 24, "tie_word_embeddings": True,
    },
    "Qwen/Qwen3-0.6B": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
        "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 40960, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 1000000, "attention_bias": False, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": 28, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    },
    "meta-llama/Llama-2-7b-hf": {  # multi-head attention: 32 KV heads
        **_LLAMA, "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "torch_dtype": "float16",
    },
    "mistralai/Mistral-7B-v0.1": {
        **_LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 32768, "rope_theta": 10000.0, "sliding_window": 4096,
    },
    "Qwen/Qwen2.5-7B": {  # q/k/v biases (all Qwen2 models have them)
        **_QWEN2, "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "max_window_layers": 28, "tie_word_embeddings": False,
    },
    "tiiuae/falcon-7b": {  # multi-query attention: one KV head; attention and MLP in parallel
        "architectures": ["FalconForCausalLM"], "model_type": "falcon", "vocab_size": 65024,
        "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71,
        "multi_query": True, "new_decoder_architecture": False, "parallel_attn": True,
        "bias": False, "alibi": False, "layer_norm_epsilon": 1e-05, "torch_dtype": "bfloat16",
    },
    "meta-llama/Meta-Llama-3-8B": {
        **_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "meta-llama/Meta-Llama-3-70B": {
        **_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
        "num_attention_heads": 64,
    },
    "meta-llama/Llama-3.1-405B": {
        **_LLAMA3, "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
        "num_attention_heads": 128, "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    },
    # Mixture of experts: total parameters far above what one token uses (active_parameters).
    "mistralai/Mixtral-8x7B-v0.1": {  # 8 full-width experts, top-2, every layer
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "num_experts_per_tok": 2, "max_position_embeddings": 32768, "hidden_act": "silu",
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    # 60 fine-grained experts top-4 plus a gated shared one (the Chat release's config.json;
    # the base model has the same shapes)
    "Qwen/Qwen1.5-MoE-A2.7B-Chat": {
        **_QWEN2, "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "num_experts": 60, "num_experts_per_tok": 4, "norm_topk_prob": False,
        "decoder_sparse_step": 1, "max_position_embeddings": 32768, "max_window_layers": 21,
        "sliding_window": 32768, "tie_word_embeddings": False,
    },
    "Qwen/Qwen3-30B-A3B": {  # 128 experts top-8, renormalised, no shared expert
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
        "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "max_position_embeddings": 40960, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": 48,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    # 256 fine-grained experts top-8 of 4 kept groups of 32, one shared; MLA; 3 dense layers.
    # The multi-token-prediction layer (num_nextn_predict_layers) is not part of the HF model.
    "deepseek-ai/DeepSeek-V3": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "first_k_dense_replace": 3,
        "moe_layer_freq": 1, "num_attention_heads": 128, "num_key_value_heads": 128,
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
        "n_group": 8, "topk_group": 4, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "max_position_embeddings": 163840, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 10000, "attention_bias": False,
        "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1,
                         "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096},
        "num_nextn_predict_layers": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    "google-bert/bert-base-uncased": {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 30522,
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute",
        "pad_token_id": 0,
    },
    "google-t5/t5-base": {  # no num_decoder_layers: the decoder is as deep as the encoder
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "is_encoder_decoder": True, "vocab_size": 32128, "d_model": 768, "d_kv": 64,
        "d_ff": 3072, "num_layers": 12, "num_heads": 12, "relative_attention_num_buckets": 32,
        "n_positions": 512, "layer_norm_epsilon": 1e-06, "feed_forward_proj": "relu",
    },
}  # fmt: skip

ALIASES: dict[str, str] = {
    "gpt2": "openai-community/gpt2",
    "gpt2-124m": "openai-community/gpt2",
    "gpt2-xl": "openai-community/gpt2-xl",
    "smollm-135m": "HuggingFaceTB/SmolLM-135M",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
    "qwen2-0.5b": "Qwen/Qwen2-0.5B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "falcon-7b": "tiiuae/falcon-7b",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.1-405b": "meta-llama/Llama-3.1-405B",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    "qwen1.5-moe-a2.7b": "Qwen/Qwen1.5-MoE-A2.7B-Chat",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "bert-base": "google-bert/bert-base-uncased",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "t5-base": "google-t5/t5-base",
}

ENCODER_TYPES = ("bert",)  # encoder-only: no KV cache
_BY_LOWER = {key.lower(): repo for key, repo in [*ALIASES.items(), *((r, r) for r in PUBLISHED)]}


def choices() -> str:
    """The names `resolve` accepts, for error hints and --help."""
    return f"{', '.join(ALIASES)} (or the HF repo ids they stand for)"


def is_published(name: str) -> bool:
    """Whether `name` is an alias or repo id of the table (case-insensitive)."""
    return name.lower() in _BY_LOWER


def resolve(name: str) -> str:
    """The repo id for an alias or repo id; an error listing the choices otherwise."""
    if not is_published(name):
        raise LLMInternalsError(
            f"unknown published model {name!r}", hint=f"choose one of {choices()}"
        )
    return _BY_LOWER[name.lower()]


def hf_config(name: str) -> dict[str, Any]:
    """A copy of the published config.json fields (change it freely)."""
    return copy.deepcopy(PUBLISHED[resolve(name)])


def kind(name: str) -> str:
    """'decoder', 'encoder' or 'encoder-decoder', from the config fields."""
    fields = PUBLISHED[resolve(name)]
    if fields.get("is_encoder_decoder"):
        return "encoder-decoder"
    return "encoder" if fields["model_type"] in ENCODER_TYPES else "decoder"


def short_name(name: str) -> str:
    """The first alias of an entry ("openai-community/gpt2" -> "gpt2"), for narrow tables."""
    repo = resolve(name)
    return next((alias for alias, target in ALIASES.items() if target == repo), repo)


def decoders() -> list[str]:
    """Short names of the decoder-only entries (those with a KV cache to size), in table order."""
    return [short_name(repo) for repo in PUBLISHED if kind(repo) == "decoder"]


def model_config(name: str) -> ModelConfig:
    """Our ModelConfig, converted from the fields exactly as a downloaded config.json would be."""
    repo = resolve(name)
    fields = PUBLISHED[repo]
    converter = _converter_for_type(fields["model_type"], repo)
    return converter.names.config_from_hf(copy.deepcopy(fields), repo)


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters by component (params.ALL_COMPONENTS, plus "total") of the HF model class:
    *ForCausalLM for decoders, BertModel (with its pooler) for BERT,
    T5ForConditionalGeneration for T5."""
    repo = resolve(name)
    model_type = PUBLISHED[repo]["model_type"]
    if model_type == "t5":
        return count_t5_parameters(PUBLISHED[repo])
    if model_type == "bert":
        return count_bert_parameters(model_config(repo))
    return with_all_components(count_parameters(model_config(repo)))


def active_parameters(name: str) -> int:
    """Parameters one token uses (params.count_active_parameters); the total for dense models."""
    repo = resolve(name)
    if PUBLISHED[repo]["model_type"] in ("t5", "bert"):
        return parameter_counts(repo)["total"]
    return count_active_parameters(model_config(repo))
