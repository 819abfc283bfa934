"""Backpropagation written out: every layer's backward pass as explicit tensor algebra.

No autograd is used here. Each layer has `*_forward` (returning its output and what the backward
needs) and `*_backward` (turning dL/d(output) into dL/d(input) and parameter gradients):

    linear.py       linear layer and embedding lookup
    activations.py  sigmoid, GELU (tanh)
    layernorm.py    LayerNorm
    attention.py    causal multi-head self-attention (softmax included)
    block.py        a pre-norm transformer block (residuals)
    gpt.py          a whole GPT-2-style model, tied LM head and cross-entropy included
    tiny_network.py the 2-2-1 sigmoid network of the "backprop" lesson
"""
