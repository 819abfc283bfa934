"""An OpenAI-compatible HTTP server over the paged engine (FastAPI + uvicorn).

Read in this order: schema.py (request bodies), prompts.py (limits, prompt ids, sampling
params), chat_template.py, engine_loop.py (the engine's thread, the asyncio hand-off, restart
after a failure), openai_format.py (response shapes, SSE), respond.py (one request's JSON or
event stream), metrics.py (/metrics), error_handlers.py (every error in the OpenAI shape),
guards.py (API key, Host check, body size and time), app.py (the routes), launch.py (uvicorn,
header timeout, connection cap).

    engine = LLM("checkpoint-dir")
    app = create_app(engine, model_name="tiny")
    with serve_in_thread(app) as url:          # or serve(app, port=8000)
        ...  # openai.OpenAI(base_url=url + "/v1", api_key="none")
"""

from llm_internals.inference.server.app import create_app
from llm_internals.inference.server.chat_template import (
    JinjaChatTemplate,
    SimpleChatTemplate,
    load_chat_template,
)
from llm_internals.inference.server.engine_loop import EngineLoop
from llm_internals.inference.server.guards import GuardSettings
from llm_internals.inference.server.launch import ConnectionLimits, serve, serve_in_thread
from llm_internals.inference.server.prompts import ServerLimits

__all__ = [
    "ConnectionLimits",
    "EngineLoop",
    "GuardSettings",
    "JinjaChatTemplate",
    "ServerLimits",
    "SimpleChatTemplate",
    "create_app",
    "load_chat_template",
    "serve",
    "serve_in_thread",
]
