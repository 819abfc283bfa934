"""DDP: two torchrun processes (gloo on CPU) end where one process with the same global batch
ends, up to the order of floating-point additions in the gradient all-reduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from llm_internals.models import load_checkpoint
from llm_internals.training.config import TrainConfig
from llm_internals.training.run import run_training

CONFIG = """
corpus = "{corpus}"
out_dir = "{out_dir}"
batch_size = 8
block_size = 16
grad_accum = 2
max_steps = 4
warmup_steps = 1
lr = 3e-3
min_lr = 3e-4
eval_interval = 2
eval_iters = 2
log_interval = 1
[model]
family = "gpt2"
d_model = 32
n_layers = 2
n_heads = 4
position = "learned"
norm = "layernorm"
ffn = "mlp"
activation = "gelu"
tie_embeddings = true
"""


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a CPU shared with other work
    spinning threads make each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, shakespeare_text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text[:30_000])
    toml = tmp_path / "ddp.toml"
    toml.write_text(CONFIG.format(corpus=corpus, out_dir=tmp_path / "ddp"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "llm_internals.cli",
        "train",
        "--config",
        str(toml),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    single = TrainConfig.load(toml).with_overrides({"out_dir": str(tmp_path / "single")})
    result = run_training(single, show_progress=False)

    ddp_state = json.loads((tmp_path / "ddp" / "step-00000004" / "trainer_state.json").read_text())
    assert ddp_state["world_size"] == 2
    assert ddp_state["step_losses"] == pytest.approx(result.step_losses, rel=1e-5, abs=1e-5)
    ddp_evals = [r["val_loss"] for r in ddp_state["history"] if "val_loss" in r]
    one_evals = [r["val_loss"] for r in result.history if "val_loss" in r]
    assert ddp_evals == pytest.approx(one_evals, rel=1e-5, abs=1e-5)
    ddp_model = load_checkpoint(tmp_path / "ddp" / "step-00000004")
    one_model = load_checkpoint(tmp_path / "single" / "step-00000004")
    for (name, a), (_, b) in zip(
        ddp_model.state_dict().items(), one_model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_each_process_takes_its_own_contiguous_slice():
    from llm_internals.errors import LLMInternalsError
    from llm_internals.training.distributed import DistributedContext

    rows = torch.arange(12).reshape(6, 2)
    slices = [DistributedContext(rank, 3).shard(rows) for rank in range(3)]
    assert torch.equal(torch.cat(slices), rows)
    assert all(s.shape == (2, 2) for s in slices)
    with pytest.raises(LLMInternalsError, match="does not split evenly over 4"):
        DistributedContext(0, 4).shard(rows)
