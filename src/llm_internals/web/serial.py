"""One recorder at a time: `llm_internals.trace` keeps its active recordings in one module-level
list, so two lessons (or a lesson and a model run) recording at once in the server's worker
threads would each see the other's values. Every web route that runs code under `recording()`
holds RECORDING_LOCK while it does."""

from __future__ import annotations

import threading

RECORDING_LOCK = threading.Lock()
