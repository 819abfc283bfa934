"""save_checkpoint/load_checkpoint for any nn.Module and torch optimizer: training continued
after a round trip (file path or file object) is bit-identical to training that never stopped."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from llm_internals.errors import LLMInternalsError
from llm_internals.training import load_checkpoint, save_checkpoint


class TiedNet(nn.Module):
    """Embedding, a hidden layer with dropout, and an output head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.hidden = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.tanh(self.hidden(self.emb(ids)))))


OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
}


def train_steps(model, optimizer, steps, seed):
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 11, (4, 5), generator=data)
        loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.roll(1, 1).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("target", ["path", "file object"])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_round_trip_continues_bit_identically(tmp_path, kind, target):
    torch.manual_seed(0)
    model = TiedNet()
    optimizer = OPTIMIZERS[kind](model.parameters())
    train_steps(model, optimizer, 3, seed=1)
    if target == "path":
        where = tmp_path / "ckpt.safetensors"
        save_checkpoint(model, optimizer, 3, where)
    else:
        where = io.BytesIO()
        save_checkpoint(model, optimizer, 3, where)
        where.seek(0)

    torch.manual_seed(99)  # a differently initialised copy, with a fresh optimizer
    restored = TiedNet()
    restored_optimizer = OPTIMIZERS[kind](restored.parameters())
    assert load_checkpoint(restored, restored_optimizer, where) == 3
    assert restored.head.weight is restored.emb.weight  # the tie survives

    train_steps(model, optimizer, 4, seed=2)
    train_steps(restored, restored_optimizer, 4, seed=2)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), restored.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_file_holds_no_pickle_and_tied_weights_once(tmp_path):
    from safetensors import safe_open

    model = TiedNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    train_steps(model, optimizer, 1, seed=0)
    save_checkpoint(model, optimizer, 1, tmp_path / "c.safetensors")
    with safe_open(tmp_path / "c.safetensors", "pt") as f:
        names = set(f.keys())
    assert "model/emb.weight" in names and "model/head.weight" not in names
    assert any(n.startswith("optimizer/state/") for n in names)


def test_flipped_byte_and_wrong_optimizer_are_named(tmp_path):
    model = TiedNet()
    optimizer = torch.optim.AdamW(model.parameters())
    train_steps(model, optimizer, 1, seed=0)
    path = tmp_path / "c.safetensors"
    save_checkpoint(model, optimizer, 1, path)
    with pytest.raises(LLMInternalsError, match="saved for optimizer 'AdamW', not SGD"):
        load_checkpoint(TiedNet(), torch.optim.SGD(model.parameters(), lr=0.1), path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # a bit of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(LLMInternalsError, match="do not match the checksum"):
        load_checkpoint(TiedNet(), torch.optim.AdamW(TiedNet().parameters()), path)
    with pytest.raises(LLMInternalsError, match="has shape"):
        other = nn.Linear(6, 3)
        save_checkpoint(other, torch.optim.SGD(other.parameters(), lr=0.1), 0, path)
        wider = nn.Linear(6, 4)
        load_checkpoint(wider, torch.optim.SGD(wider.parameters(), lr=0.1), path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(LLMInternalsError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(model, optimizer, path)
