"""Loading one of our model folders: load_checkpoint against the way it loaded before.

    python benchmarks/checkpoint_load.py [--rounds 5]

load_checkpoint now verifies the SHA-256 of the weight files, compares names and shapes with
the safetensors headers on a meta-device model, and assigns the file's tensors into that model.
The reference is the previous way: build the model on the CPU (random init), read the weights,
load_state_dict. Rounds alternate the two, so a shared machine slows both alike; the SHA-256
of the weight file alone is timed beside them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llm_internals.models import DecoderLM, ModelConfig
from llm_internals.models.checkpoint import (
    file_sha256,
    load_checkpoint,
    read_weights,
    save_checkpoint,
)

CONFIG = ModelConfig(vocab_size=32000, d_model=512, n_layers=8, n_heads=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    try:
        save_checkpoint(DecoderLM(CONFIG), folder)
        size = (folder / "model.safetensors").stat().st_size
        ours, previous, sha = [], [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            load_checkpoint(folder)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            DecoderLM(CONFIG).load_state_dict(read_weights(folder), strict=False)
            previous.append(time.perf_counter() - started)
            started = time.perf_counter()
            file_sha256(folder / "model.safetensors")
            sha.append(time.perf_counter() - started)
        ours_s, previous_s = statistics.median(ours), statistics.median(previous)
        print(
            f"{sum(p.numel() for p in DecoderLM(CONFIG).parameters()) / 1e6:.1f}M parameters, "
            f"{size / 2**20:.0f} MiB: load_checkpoint {ours_s:.3f} s, previous way "
            f"{previous_s:.3f} s (ratio {ours_s / previous_s:.2f}); SHA-256 alone "
            f"{statistics.median(sha):.3f} s (medians of {args.rounds})"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
