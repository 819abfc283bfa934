"""Training: the loss, hand-written backprop, optimizers (SGD, AdamW, Muon), schedules, and the
trainer that puts them together. Import most things from the submodules (e.g. `training.loss`).

`save_checkpoint(model, optimizer, step, path_or_file)` and `load_checkpoint(model, optimizer,
path_or_file) -> step` save and restore any nn.Module with its optimizer (one safetensors file;
see module_checkpoint.py). They are not `llm_internals.models.save_checkpoint(model, folder)`,
which writes one of our models as a self-describing folder.
"""

from llm_internals.training.module_checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
