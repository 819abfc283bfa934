"""The Model view's routes: what the loaded model does with a prompt (web/model_inspect.py).

    GET /api/model               the model's shape (layers, heads, experts) and the prompt limit
    GET /api/model/inspect       ?prompt=&layer=&head=&temperature=&top_p=&top_k=: tokens with
                                 ids, the attention weights of one layer and head, residual
                                 norms, the logit lens, next-token probabilities, MoE routing
    GET /api/model/next-token    ?prompt=&temperature=&top_p=&top_k=: only the probabilities
                                 (the page's sliders call this)

The model is loaded once per app, on first use, from the app's model_path (any folder
`load_model_and_tokenizer` accepts; by default the small trained model that ships with the
package, explain/lesson_model.py), and shared with the Engine view. Everything that runs it
holds web/serial.py's RECORDING_LOCK: a recorded forward switches its attention to the
from-scratch path for a moment, and `trace.recording()` is process-wide, so a lesson building in
another thread must not see this model's records (nor an engine step's). The last few prompts'
forwards are kept, so moving a slider costs no forward.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request

from llm_internals.explain import lesson_model
from llm_internals.models.loading import load_model_and_tokenizer
from llm_internals.web import model_inspect as mi
from llm_internals.web.errors import ApiError
from llm_internals.web.serial import RECORDING_LOCK

router = APIRouter(prefix="/api/model")
KEPT_RUNS = 4
_loading = threading.Lock()


@dataclass
class ExplorerModel:
    """The app's model and tokenizer, the lock every forward takes, and recent prompt runs."""

    path: str
    model: Any
    tokenizer: Any
    lock: threading.Lock = RECORDING_LOCK
    runs: OrderedDict[tuple[int, ...], mi.PromptRun] = field(default_factory=OrderedDict)

    def run(self, ids: list[int]) -> mi.PromptRun:
        """The recorded forward over ids (kept for the last KEPT_RUNS prompts); call with the
        lock held."""
        key = tuple(ids)
        if key not in self.runs:
            self.runs[key] = mi.run_prompt(self.model, ids)
            while len(self.runs) > KEPT_RUNS:
                self.runs.popitem(last=False)
        self.runs.move_to_end(key)
        return self.runs[key]


def explorer_model(request: Request) -> ExplorerModel:
    """The app's loaded model (loaded on first use): its model_path, or else the small trained
    model that ships with the package (explain/lesson_model.py)."""
    state = request.app.state
    loaded = getattr(state, "explorer_model", None)
    if loaded is not None:
        return loaded
    path = getattr(state, "model_path", None)
    if path is None:
        path = lesson_model.LESSON_MODEL_DIR
        if not (path / "config.json").is_file():
            raise ApiError(404, f"no --model was given and the package's trained model is "
                           f"missing ({path})", hint="restart with llm-internals explore "
                           f"--model PATH, or {lesson_model.REBUILD_HINT}")  # fmt: skip
    with _loading:
        if getattr(state, "explorer_model", None) is None:
            model, tokenizer, _ = load_model_and_tokenizer(Path(path))
            state.explorer_model = ExplorerModel(str(path), model, tokenizer)
    return state.explorer_model


PromptField = Query(max_length=100_000, description="the prompt text")


def _check_index(name: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise ApiError(
            404,
            f"unknown {name} {value}: this model has {count} {name}s, numbered 0 to {count - 1}",
            hint=f"choose a {name} between 0 and {count - 1}",
        )


def _prompt_run(loaded: ExplorerModel, prompt: str) -> tuple[list[int], mi.PromptRun]:
    limit = min(mi.MAX_PROMPT_TOKENS, loaded.model.config.max_seq_len)
    ids = mi.encode_prompt(loaded.tokenizer, prompt, limit)
    with loaded.lock:
        return ids, loaded.run(ids)


@router.get("")
def model_info(request: Request) -> dict[str, Any]:
    loaded = explorer_model(request)
    config = loaded.model.config
    return dict(
        path=loaded.path,
        family=config.family,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads,
        d_model=config.d_model,
        vocab_size=config.vocab_size,
        max_seq_len=config.max_seq_len,
        max_prompt_tokens=min(mi.MAX_PROMPT_TOKENS, config.max_seq_len),
        experts=(config.moe or {}).get("n_experts"),
    )


@router.get("/inspect")
def inspect(
    request: Request,
    prompt: str = PromptField,
    layer: int = 0,
    head: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> dict[str, Any]:
    loaded = explorer_model(request)
    config = loaded.model.config
    _check_index("layer", layer, config.n_layers)
    params = mi.sampling_params(temperature, top_p, top_k)
    ids, run = _prompt_run(loaded, prompt)
    attention = run.attention[layer]
    _check_index("head", head, attention.shape[0])
    with loaded.lock:
        lens = mi.logit_lens(loaded.model, run, loaded.tokenizer)
    pieces = mi.token_pieces(loaded.tokenizer, ids)
    return dict(
        tokens=[dict(id=i, piece=p) for i, p in zip(ids, pieces, strict=True)],
        n_layers=config.n_layers,
        n_heads=attention.shape[0],
        layer=layer,
        head=head,
        attention=attention[head].tolist(),
        residual_norms=mi.residual_norms(run),
        logit_lens=lens,
        next_token=mi.next_token_distribution(run.logits[-1], loaded.tokenizer, params),
        routing=run.routing,
    )


@router.get("/next-token")
def next_token(
    request: Request,
    prompt: str = PromptField,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> dict[str, Any]:
    loaded = explorer_model(request)
    params = mi.sampling_params(temperature, top_p, top_k)
    _, run = _prompt_run(loaded, prompt)
    return mi.next_token_distribution(run.logits[-1], loaded.tokenizer, params)
