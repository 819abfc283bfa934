"""Lesson "gqa": grouped-query attention, from the KV-cache problem to uptraining.

Head grouping is what `MultiHeadAttention` recorded with n_kv_heads < n_heads; KV-cache sizes come
from `inference.kv_memory` on published configs; the uptraining section builds a tiny random
Llama with HF transformers (no weights can be downloaded here), loads it with `load_pretrained`,
mean-pools its K/V heads with `models.gqa_uptrain.uptrain_init` and measures the logit change.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.explain.registry import LessonInfo
from llm_internals.inference.kv_memory import KVShape, load_shape
from llm_internals.layers.multihead import MultiHeadAttention
from llm_internals.models.gqa_uptrain import uptrain_init
from llm_internals.models.hf import load_pretrained
from llm_internals.trace import recording

INFO = LessonInfo(
    name="gqa",
    title="Grouped-query attention",
    summary="MHA's KV-cache cost, MQA and GQA, head grouping, KV bytes of real models, and "
    "converting MHA to GQA by mean-pooling heads.",
)

N_HEADS, N_KV_HEADS, HEAD_DIM, TOKENS = 4, 2, 2, 3
CONTEXT = 8192  # tokens per sequence in the KV table
KV_MODELS = ["gpt2", "falcon-7b", "mistral-7b", "llama-3-8b", "llama-3-70b", "llama-3.1-405b"]
# The tiny HF Llama for uptraining: MHA with 8 heads, HF's default random init.
TINY_LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64,
                  tie_word_embeddings=False)  # fmt: skip
UPTRAIN_GROUPS = (8, 4, 2, 1)
PICTURE_MODEL = "llama-3-8b"  # the published model of the big picture, terminology and summary
SEED = 0


def grouped_attention() -> tuple[MultiHeadAttention, torch.Tensor, dict[str, torch.Tensor]]:
    """A GQA layer (4 query heads, 2 K/V heads) run on 3 tokens, with what it recorded."""
    torch.manual_seed(SEED)
    attention = MultiHeadAttention(N_HEADS * HEAD_DIM, N_HEADS, N_KV_HEADS)
    x = torch.randn(1, TOKENS, N_HEADS * HEAD_DIM)
    with recording() as rec, torch.no_grad():
        attention(x, causal=True)
    return attention, x, {name: rec.get(name)[0] for name in ("q", "k", "v", "weights")}


def as_mha(attention: MultiHeadAttention) -> MultiHeadAttention:
    """The same layer written as MHA: each K/V head's projection repeated for its group."""
    n_rep = attention.n_rep
    mha = MultiHeadAttention(N_HEADS * HEAD_DIM, N_HEADS)
    with torch.no_grad():
        for name in ("q_proj", "o_proj"):
            getattr(mha, name).weight.copy_(getattr(attention, name).weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(attention, name).weight.view(attention.n_kv_heads, HEAD_DIM, -1)
            getattr(mha, name).weight.copy_(w.repeat_interleave(n_rep, dim=0).flatten(0, 1))
    return mha


def kv_shapes() -> list[KVShape]:
    shapes = [load_shape(name, dtype="bfloat16") for name in KV_MODELS]
    shapes.insert(1, load_shape("llama-2-7b", dtype="bfloat16"))
    return shapes


def kv_rows() -> list[list]:
    rows = []
    for s in kv_shapes():
        kind = "MHA" if s.kv_heads == s.heads else ("MQA" if s.kv_heads == 1 else "GQA")
        mha_bytes = 2 * s.layers * s.heads * s.head_dim * s.bytes_per_element
        rows.append([s.name, kind, s.layers, s.heads, s.kv_heads, s.head_dim,
                     s.bytes_per_token / 1024, s.cache_bytes(CONTEXT) / 2**30,
                     mha_bytes / s.bytes_per_token])  # fmt: skip
    return rows


def tiny_llama(directory: str) -> torch.nn.Module:
    """A random HF LlamaForCausalLM saved to `directory` (import is local: transformers is slow
    to import and only this section needs it)."""
    import transformers

    torch.manual_seed(SEED)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA)).eval()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar mid-lesson
    try:
        hf.save_pretrained(directory)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return hf


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny models on one torch thread: on a busy CPU, threads of such small operations
    mostly wait for each other (measured: 6 s instead of 0.13 s for this section)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def uptrain_rows() -> tuple[float, list[list]]:
    """Parity of the import, then the logit change for each K/V head count."""
    with one_thread():
        return _uptrain_rows()


def _uptrain_rows() -> tuple[float, list[list]]:
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (4, 32),
                        generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        hf = tiny_llama(directory)
        model = load_pretrained(directory)
        reference = hf(ids).logits
        parity = float((model(ids) - reference).abs().max())
        rows = []
        for groups in UPTRAIN_GROUPS:
            logits = uptrain_init(model, groups)(ids)
            log_p, log_q = reference.log_softmax(-1), logits.log_softmax(-1)
            kl = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
            top1 = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
            rows.append([groups, float((logits - reference).abs().max()),
                         float((logits - reference).abs().mean()), kl, 100 * top1])  # fmt: skip
    return parity, rows


def variant_rows(model: str = PICTURE_MODEL) -> list[list]:
    """The model's KV cache (bf16, one CONTEXT-token sequence) with one K/V head per query head
    (MHA), its published K/V heads (GQA) and a single K/V head (MQA)."""
    shape = load_shape(model, dtype="bfloat16")
    rows = []
    for kind, kv_heads in (("MHA", shape.heads), ("GQA", shape.kv_heads), ("MQA", 1)):
        variant = dataclasses.replace(shape, kv_heads=kv_heads)
        rows.append([kind, kv_heads, shape.heads // kv_heads, variant.bytes_per_token,
                     variant.cache_bytes(CONTEXT)])  # fmt: skip
    return rows


def _section_big_picture() -> Section:
    mha, gqa, mqa = variant_rows()
    return Section(
        "The big picture",
        [
            Step(
                "Generating text is mostly reading the KV cache: every new token attends to "
                "the keys and values of all the tokens before it, so the cache grows with the "
                f"context and is read in full at every step. For {PICTURE_MODEL} at "
                f"{CONTEXT:,} tokens in bf16, one K/V head per query head would need "
                f"{mha[4] / 2**30:.0f} GiB per sequence; sharing each K/V head among "
                f"{gqa[2]} query heads, as the model does, needs {gqa[4] / 2**30:.0f} GiB. "
                "Grouped-query attention is that sharing: fewer keys and values, the same "
                "number of queries, almost the same quality.",
                values={
                    "MHA cache bytes": mha[4],
                    "GQA cache bytes": gqa[4],
                    "MQA cache bytes": mqa[4],
                },
            )
        ],
    )


def _section_terminology() -> Section:
    shape = load_shape(PICTURE_MODEL, dtype="bfloat16")
    terms = [
        ["H (n_heads)", "query heads per layer", shape.heads],
        ["G (n_kv_heads)", "key/value heads per layer", shape.kv_heads],
        ["H / G (n_rep)", "query heads sharing one K/V head", shape.heads // shape.kv_heads],
        ["head_dim", "size of one head's q, k and v", shape.head_dim],
        ["KV cache", "K and V of past tokens, kept for decoding (bytes/token)",
         shape.bytes_per_token],
        ["MHA", "multi-head attention: G = H", shape.heads],
        ["MQA", "multi-query attention: G = 1", 1],
        ["GQA", "grouped-query attention: 1 < G < H", shape.kv_heads],
    ]  # fmt: skip
    return Section(
        "Terminology",
        [
            Step(
                f"The names this lesson uses, with {PICTURE_MODEL}'s values from its "
                "published config.",
                values={"terms": Table(["term", "meaning", PICTURE_MODEL], terms)},
            )
        ],
    )


def _section_summary() -> Section:
    return Section(
        "Summary",
        [
            Step(
                "MHA, GQA and MQA differ only in how many K/V heads the H query heads share. "
                "The cache, and the bandwidth decoding spends reading it, scales with G; the "
                "query side and the attention arithmetic stay the same. GQA with G = 8 keeps "
                "MHA's quality closely while cutting the cache H/G-fold, and an MHA checkpoint "
                f"can be converted by mean-pooling its K/V heads and briefly uptraining. "
                f"{PICTURE_MODEL}, bf16, one {CONTEXT:,}-token sequence:",
                values={
                    "KV cache by variant": Table(
                        [
                            "variant",
                            "kv heads",
                            "query heads per kv head",
                            "bytes per token",
                            f"bytes at {CONTEXT:,} tokens",
                        ],
                        variant_rows(),
                    )  # fmt: skip
                },
            )
        ],
    )


def _section_mha_recap() -> Section:
    return Section(
        "MHA recap",
        [
            Step(
                "Multi-head attention gives each of H heads its own query, key and value "
                "projections. At generation time the keys and values of every past token "
                "are kept (the KV cache) so that each new token only computes its own.",
                formula="head_h = softmax(Q_h K_h^T / sqrt(d_k)) V_h,  h = 1..H",
            )
        ],
    )


def _section_kv_cache_problem() -> Section:
    return Section(
        "Its KV-cache problem",
        [
            Step(
                "The cache holds 2 (K and V) x layers x heads x head_dim numbers per token. "
                f"For Llama-2-7B (32 layers, 32 heads of 128) in bf16 that is 512 KiB per "
                f"token, 4 GiB for one {CONTEXT}-token sequence: decoding reads all of it "
                "for every new token, so memory bandwidth and capacity, not arithmetic, "
                "limit speed and batch size.",
                formula="KV bytes = 2 x layers x kv_heads x head_dim x tokens x bytes",
            )
        ],
    )


def _section_mqa() -> Section:
    return Section(
        "MQA",
        [
            Step(
                "Multi-query attention (Shazeer, 2019) keeps H query heads but only one "
                "key/value head shared by all of them: the cache shrinks H-fold, at some "
                "cost in quality and training stability (Falcon-7B, PaLM)."
            )
        ],
    )


def _section_gqa() -> Section:
    d = 4096
    variants = [[name, kv, 2 * 32 * kv * 128 * 2 / 1024, 2 * d * kv * 128]
                for name, kv in (("MHA", 32), ("GQA-8", 8), ("GQA-4", 4), ("MQA", 1))]  # fmt: skip
    return Section(
        "GQA",
        [
            Step(
                "Grouped-query attention (Ainslie et al., 2023) takes the middle road: G "
                "key/value heads, each shared by a group of H/G query heads. Llama-2-70B, "
                "Llama 3, Mistral and Qwen use it, typically with G = 8. With "
                "Llama-2-7B's shape (32 layers, d 4096, 32 heads of 128), bf16:",
                values={
                    "variants": Table(
                        [
                            "variant",
                            "kv heads",
                            "KV KiB per token",
                            "W_k + W_v params per layer",
                        ],
                        variants,
                    )
                },
                decimals=0,
            )
        ],
    )


def _section_head_grouping(attention, rec) -> Section:
    grouping = [[h, h // attention.n_rep] for h in range(N_HEADS)]
    return Section(
        "How it works: head grouping",
        [
            Step(
                f"A real GQA layer with {N_HEADS} query heads and {N_KV_HEADS} K/V heads on "
                f"{TOKENS} tokens: q has {N_HEADS} heads, k and v only {N_KV_HEADS}. Query "
                "head h reads K/V head h // (H/G): consecutive query heads share one.",
                values={
                    "query head -> K/V head": Table(["query head", "K/V head"], grouping),
                    "q shape": str(tuple(rec["q"].shape)),
                    "k shape": str(tuple(rec["k"].shape)),
                    "K/V head 0 keys": rec["k"][0],
                    "weights, query head 0": rec["weights"][0],
                    "weights, query head 1": rec["weights"][1],
                },
            )
        ],
    )


def _section_gqa_generalizes_mha(attention, x) -> Section:
    mha = as_mha(attention)
    with torch.no_grad():
        gqa_out, mha_out = attention(x, causal=True), mha(x, causal=True)
    return Section(
        "GQA generalizes MHA and MQA",
        [
            Step(
                "G = H is MHA, G = 1 is MQA. Equivalently, a GQA layer is an MHA layer whose "
                "K/V projections are repeated within each group: copying them that way "
                "into a plain MHA layer gives the same output.",
                values={
                    "max |GQA(x) - MHA with repeated K/V(x)|": float(
                        (gqa_out - mha_out).abs().max()
                    )
                },  # fmt: skip
                decimals=8,
            )
        ],
    )


def _section_kv_cache_bytes() -> Section:
    return Section(
        "KV-cache bytes of real models",
        [
            Step(
                f"bf16 cache, one sequence of {CONTEXT} tokens, from the published configs. "
                "The last column is how many times larger the cache would be with one K/V "
                "head per query head.",
                values={
                    "KV cache": Table(
                        [
                            "model",
                            "kind",
                            "layers",
                            "heads",
                            "kv heads",
                            "head_dim",
                            "KiB per token",
                            f"GiB at {CONTEXT}",
                            "MHA / this",
                        ],
                        kv_rows(),
                    )  # fmt: skip
                },
                decimals=2,
            )
        ],
    )


def _section_uptraining_mha_gqa() -> Section:
    parity, uptrain = uptrain_rows()
    return Section(
        "Uptraining: MHA to GQA by mean-pooling",
        [
            Step(
                "An existing MHA checkpoint becomes GQA by averaging the K and V projection "
                "heads of each group, then training a little more (about 5% of the "
                "original pretraining in the paper). No pretrained weights can be "
                "downloaded here, so the model is a tiny random HF Llama (2 layers, 8 heads, "
                "HF's default init) built with transformers and loaded with "
                "load_pretrained. Random heads are unrelated to each other, the worst case "
                "for pooling; trained heads are more alike. The logit change before any "
                "further training, on 4 x 32 random tokens. A random model's next-token "
                "distributions are nearly flat, so the argmax flips easily while the KL "
                "divergence stays small; the short uptraining is what recovers quality.",
                formula="W_k^g = mean of W_k^h over the heads h of group g (W_v likewise)",
                values={
                    "import parity: max |ours - HF| logits": f"{parity:.1e}",
                    "logit change": Table(
                        [
                            "kv heads",
                            "max |diff|",
                            "mean |diff|",
                            "KL(HF || pooled)",
                            "top-1 agreement %",
                        ],
                        uptrain,
                    ),  # fmt: skip
                },
                decimals=4,
            )
        ],
    )


def build() -> Lesson:
    attention, x, rec = grouped_attention()
    sections = [
        _section_big_picture(),
        _section_terminology(),
        _section_mha_recap(),
        _section_kv_cache_problem(),
        _section_mqa(),
        _section_gqa(),
        _section_head_grouping(attention, rec),
        _section_gqa_generalizes_mha(attention, x),
        _section_kv_cache_bytes(),
        _section_uptraining_mha_gqa(),
        _section_summary(),
    ]
    return Lesson(name=INFO.name, title=INFO.title, summary=INFO.summary, sections=sections)
