"""Lesson "mla": Multi-head Latent Attention (DeepSeek-V2/V3), the cache that keeps a latent.

Tiny DecoderLMs with `mla=...` (tiny_models) run the library's MultiHeadLatentAttention under a
recorder: the cached latent, naive vs absorbed scores and outputs, and the bytes of the real
contiguous cache next to an MHA and a GQA model of the same width. RoPE comes from layers/rope.py;
DeepSeek-V3's cache size from `kv_values_per_token` on its row of models/published.py.
"""

from __future__ import annotations

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.explain.tiny_models import tiny_decoder
from llm_internals.inference.kv_cache import ContiguousKVCache
from llm_internals.layers.mla import kv_values_per_token
from llm_internals.layers.rope import RotaryEmbedding, apply_rope
from llm_internals.models.config import mla_layer_config
from llm_internals.models.published import model_config
from llm_internals.trace import recording

INFO = LessonInfo(
    name="mla",
    title="Multi-head latent attention",
    summary="DeepSeek's attention caches one small latent per token instead of keys and values: "
    "the compression, decoupled RoPE, absorbed weights, and the bytes saved.",
)

D_MODEL, HEADS, HEAD_DIM, GQA_KV_HEADS = 64, 8, 8, 2
# DeepSeek's proportions at this width: d_c = 4 head_dim, d_r = head_dim / 2
MLA = dict(kv_lora_rank=32, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)
TOKENS = 12
SEED = 0
BF16 = 2  # bytes per cached value


def mla_model(mode: str = "auto"):
    return tiny_decoder(SEED, d_model=D_MODEL, n_heads=HEADS, mla={**MLA, "attn_mode": mode})


def token_ids() -> torch.Tensor:
    return torch.randint(0, 29, (1, TOKENS), generator=torch.Generator().manual_seed(SEED))


def v3_rows() -> list[list]:
    """DeepSeek-V3 (the table of published shapes): values cached per token per layer and bf16
    bytes per token over all layers, for MLA and for other attentions of its 128 heads."""
    config = model_config("deepseek-v3")
    v3 = mla_layer_config(config)
    head, latent = v3.qk_nope_head_dim, kv_values_per_token(v3)  # 128: V3's key/value head width
    kinds = (("MHA, 128 heads", 2 * v3.num_attention_heads * head),
             ("GQA, 8 KV heads", 2 * 8 * head), ("MQA", 2 * head), ("MLA", latent))  # fmt: skip
    return [[name, values, values * config.n_layers * BF16, values / latent]
            for name, values in kinds]  # fmt: skip


def _section_why() -> Section:
    return Section(
        "Why latent attention",
        [
            Step(
                "Decoding reads the whole KV cache for every new token, so its size limits "
                "batch size and speed. GQA shrinks it by sharing K/V heads, at some cost in "
                "quality; MLA instead caches one compressed latent per token from which every "
                "head's keys and values are rebuilt. DeepSeek-V3's attention shape (128 heads "
                "of 128), per token, 61 layers, bf16:",
                values={
                    "KV cache": Table(
                        ["attention", "values per token per layer", "bytes per token", "x MLA"],
                        v3_rows(),
                    )
                },  # fmt: skip
                decimals=1,
            )
        ],
    )


def latent_record() -> tuple[torch.Tensor, torch.nn.Module]:
    model = mla_model()
    with recording() as rec, torch.no_grad():
        model(token_ids())
    return rec.all("mla_latent")[0][0, 0], model.blocks[0].attn


def _section_compression() -> Section:
    latent, attn = latent_record()
    d_c, d_r = MLA["kv_lora_rank"], MLA["qk_rope_head_dim"]
    shapes = [["W_DKV (kv_a_proj_with_mqa)", str(tuple(attn.kv_a_proj_with_mqa.weight.shape))],
              ["W_UKV (kv_b_proj)", str(tuple(attn.kv_b_proj.weight.shape))],
              ["c_kv, one token", f"({d_c},)"], ["k_rope, one token", f"({d_r},)"]]  # fmt: skip
    return Section(
        "The compression",
        [
            Step(
                f"W_DKV maps each token ({D_MODEL} wide) down to a latent c_kv of d_c = {d_c} "
                f"values plus a RoPE key of d_r = {d_r}; W_UKV maps c_kv back up to all "
                f"{HEADS} heads' keys (d_nope = {MLA['qk_nope_head_dim']}) and values "
                f"(d_v = {MLA['v_head_dim']}). Only [c_kv ; k_rope] is cached: what the "
                f"first block of a tiny model recorded for {TOKENS} tokens:",
                formula="[c_kv ; k_rope] = W_DKV x;  [k_nope_i ; v_i] = W_UKV_i RMSNorm(c_kv)",
                values={
                    "shapes": Table(["weight / tensor", "shape"], shapes),
                    "cached latent [c_kv ; k_rope]": latent,
                },  # fmt: skip
            )
        ],
    )


def rope_demo() -> dict[str, float]:
    """Head 0 of the tiny model, one query q at the last position i against the recorded
    latents c_j: without RoPE one folded W_UK serves every key; with RoPE on k_nope the matrix to
    fold, R_(j-i) W_UK, changes with the key's position j."""
    latent, attn = latent_record()
    d_c, d_nope = MLA["kv_lora_rank"], MLA["qk_nope_head_dim"]
    w_uk = attn.kv_b_proj.weight.detach().view(HEADS, -1, d_c)[0, :d_nope]  # (d_nope, d_c)
    c_kv = latent[:, :d_c]
    q = torch.randn(d_nope, generator=torch.Generator().manual_seed(SEED + 1))
    k_nope = c_kv @ w_uk.T  # (tokens, d_nope)
    absorbed = c_kv @ (w_uk.T @ q)  # (W_UK^T q) . c_j: one vector per query, for all keys
    rotary = RotaryEmbedding(d_nope)
    cos, sin = rotary(torch.arange(TOKENS))
    rotated = apply_rope(k_nope, cos, sin) @ apply_rope(q[None], cos[-1:], sin[-1:])[0]
    offset_cos, offset_sin = rotary(torch.arange(TOKENS) - (TOKENS - 1))  # j - i
    folds = apply_rope(w_uk.T[None], offset_cos[:, None], offset_sin[:, None])  # (R W_UK)^T
    return {
        "max |q . k_nope_j - (W_UK^T q) . c_j|": float((k_nope @ q - absorbed).abs().max()),
        "max change of R_(j-i) W_UK over j": float((folds - w_uk.T).abs().max()),
        "max |(R_i q) . (R_j k_nope_j) - (W_UK^T q) . c_j|": float(
            (rotated - absorbed).abs().max()
        ),
    }


def _section_decoupled_rope() -> Section:
    shown = {name: f"{value:.1e}" for name, value in rope_demo().items()}
    return Section(
        "Decoupled RoPE",
        [
            Step(
                "Without positions, q . k_nope_j = q . (W_UK c_j) = (W_UK^T q) . c_j: W_UK can "
                "move to the query side once, and attention runs against the cached latents. "
                "RoPE rotates k_j by its position, R_j W_UK c_j, so the matrix to fold, "
                "R_i^T R_j W_UK, changes with every pair of positions and cannot be absorbed. "
                "MLA therefore keeps the content channel position-free and carries position "
                "in a separate d_r-wide channel: a rope key shared by all heads, cached "
                "beside c_kv. Head 0 of the tiny model, one random query at the last "
                f"position i, against the {TOKENS} cached latents: the identity holds without "
                "RoPE; with it the fold matrix moves and one folded query misses the scores.",
                formula="score_ij = (W_UK^T q_nope_i) . c_j + q_rope_i . k_rope_j",
                values=shown,
            )
        ],
    )


def naive_and_absorbed() -> dict[str, dict[str, torch.Tensor]]:
    """Two models with the same weights, one attending naively, one in the latent space."""
    runs = {}
    for mode in ("naive", "absorbed"):
        with recording() as rec, torch.no_grad():
            logits = mla_model(mode)(token_ids())
        # block 0, head 0; the absorbed mode may fold the heads into the query axis
        scores = rec.all("scaled_scores")[0][0].reshape(HEADS, TOKENS, TOKENS)[0]
        runs[mode] = {"scores": scores, "logits": logits[0]}
    return runs


def _section_absorbed() -> Section:
    runs = naive_and_absorbed()
    naive, absorbed = runs["naive"], runs["absorbed"]
    differences = {
        f"max |naive - absorbed| {name}": f"{float((naive[name] - absorbed[name]).abs().max()):.1e}"
        for name in ("scores", "logits")
    }
    d_c, d_r = MLA["kv_lora_rank"], MLA["qk_rope_head_dim"]
    return Section(
        "Absorbed weights",
        [
            Step(
                "The naive mode expands every cached latent into per-head keys "
                f"[k_nope ; k_rope] ({MLA['qk_nope_head_dim'] + d_r} wide) and values; the "
                "absorbed mode multiplies each query by W_UK^T once and attends against the "
                f"latents themselves ({d_c + d_r} wide), then applies W_UV to the attention "
                "output: multi-query attention with one shared key (the latent) and one shared "
                "value (c_kv). Prefill (many queries) is cheaper naive, decoding (one query, many "
                "cached tokens) absorbed; the model's `auto` mode picks accordingly. Same "
                "weights, same tokens:",
                formula="o_i = W_UV_i (softmax(score_i) C_kv)",
                values={"scaled scores, head 0, naive": naive["scores"], **differences},
            )
        ],
    )


def cache_rows() -> list[list]:
    """Prefill TOKENS tokens into each model's real contiguous cache and weigh it."""
    models = {"MHA": tiny_decoder(SEED, d_model=D_MODEL, n_heads=HEADS),
              f"GQA, {GQA_KV_HEADS} KV heads": tiny_decoder(SEED, d_model=D_MODEL, n_heads=HEADS,
                                                            n_kv_heads=GQA_KV_HEADS),
              "MLA": mla_model()}  # fmt: skip
    rows = []
    for name, model in models.items():
        cache = ContiguousKVCache.for_model(model, 1, TOKENS)
        with torch.no_grad():
            model(token_ids(), cache=cache)
        per_token = cache.nbytes() // (TOKENS * model.config.n_layers)
        rows.append([name, per_token // 4, per_token, cache.nbytes()])
    return rows


def _section_cache_bytes() -> Section:
    rows = cache_rows()
    return Section(
        "Cache bytes against MHA and GQA",
        [
            Step(
                f"Three tiny models of the same width ({HEADS} heads of {HEAD_DIM}), each "
                f"prefilled with {TOKENS} tokens into the library's ContiguousKVCache (float32, "
                "2 layers): MHA keeps a key and a value per head, GQA per K/V head, MLA the "
                "latent alone (its values are the latent's first d_c features, read in place). "
                f"MLA with d_c = 4 head_dim and d_r = head_dim / 2 stores {rows[2][1]} values, "
                f"about a GQA with {rows[2][1] / (2 * HEAD_DIM):.2f} K/V heads, while every "
                f"head keeps its own keys and values.",
                values={
                    "KV cache (measured)": Table(
                        [
                            "model",
                            "values per token per layer",
                            "bytes per token per layer",
                            "cache bytes",
                        ],
                        rows,
                    )
                },  # fmt: skip
            )
        ],
    )


def build() -> Lesson:
    sections = [
        _section_why(),
        _section_compression(),
        _section_decoupled_rope(),
        _section_absorbed(),
        _section_cache_bytes(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
