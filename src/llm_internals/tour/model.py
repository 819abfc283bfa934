"""Tour stage "model": build the GPT the training stage will train and count its parameters.

The counts come from the instantiated model and, independently, from the config's formulas
(models/params.py); the stage shows both so a reader can check where the parameters live.
"""

from __future__ import annotations

from rich.table import Table

from llm_internals.models import count_model_parameters, count_parameters
from llm_internals.tour import TourContext
from llm_internals.tour.training import FALLBACK_VOCAB, TOUR_CONFIG
from llm_internals.training.trainer import build_model


def run(ctx: TourContext) -> None:
    tokenizer = ctx.artifacts.get("tokenizer")
    vocab_size = tokenizer.vocab_size if tokenizer is not None else FALLBACK_VOCAB
    model = build_model(TOUR_CONFIG, vocab_size).to(ctx.device)  # float32: training casts none
    config = model.config
    ctx.console.print(
        f"A GPT-2-style decoder: {config.n_layers} layers, {config.n_heads} heads, d_model "
        f"{config.d_model}, d_ff {config.d_ff}, context {config.max_seq_len} tokens, vocabulary "
        f"{config.vocab_size:,}, learned positions, LayerNorm, GELU MLP, output head tied to "
        "the token embedding."
    )
    counted = count_model_parameters(model)
    formula = count_parameters(config)
    table = Table(title="parameters by component", title_justify="left")
    table.add_column("component")
    table.add_column("counted in the model", justify="right")
    table.add_column("from the formulas", justify="right")
    table.add_column("share", justify="right")
    for name, count in counted.items():
        share = f"{count / counted['total']:.1%}" if name != "total" else ""
        table.add_row(name, f"{count:,}", f"{formula[name]:,}", share)
    ctx.console.print(table)
    ctx.console.print(
        "With a vocabulary this large and a model this small, the embedding table holds a big "
        "share of the parameters; the output head reuses it (tied), so it adds none."
    )
    ctx.artifacts["model"] = model
