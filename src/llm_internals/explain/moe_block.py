"""The block-level run of the `moe` lesson: a tiny DecoderLM built with `moe=` whose block 0
keeps a dense FFN (DeepSeek's first_k_dense_replace) and block 1 has a MoELayer, run on a short
text so the lesson can show which FFN each block has and the experts each position picked.
"""

from __future__ import annotations

import torch

from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer

BLOCK_MOE = {"d_expert": 16, "n_experts": 4, "top_k": 2, "dense_layers": [0]}


def block_model():
    """A tiny DecoderLM whose block 0 keeps a dense FFN and block 1 has a MoELayer."""
    return tiny_decoder(0, moe=BLOCK_MOE)


def block_routing(text: str) -> tuple[list[list], list[list]]:
    """Each block's FFN class and parameters, and per character of `text` block 1's two experts
    and their weights."""
    model = block_model()
    ids = torch.tensor([tiny_tokenizer().encode(text)])
    with torch.no_grad():
        model(ids)
    rows = [[i, type(b.ffn).__name__, sum(p.numel() for p in b.ffn.parameters())]
            for i, b in enumerate(model.blocks)]  # fmt: skip
    routing = model.blocks[1].ffn.last_routing
    tokens = [[repr(ch), *routing.indices[t].tolist(), *routing.weights[t].tolist()]
              for t, ch in enumerate(text)]  # fmt: skip
    return rows, tokens
