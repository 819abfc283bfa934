"""Number formats and quantisers (floor 1): int8, int4, fp8, mxfp4/nvfp4, nf4; quantised linear
layers and quantisation-aware training. See docs/quantization.md."""
