"""Training: the loss, hand-written backprop, optimizers (SGD, AdamW, Muon), schedules, and the
trainer that puts them together. Import from the submodules (e.g. `training.loss`)."""
