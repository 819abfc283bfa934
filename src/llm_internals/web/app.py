"""The explorer's FastAPI app: pages, JSON routes under /api/, static assets under /static/.

    create_app(model_path)  builds the app (binds nothing; `llm-internals explore` runs it under
                            uvicorn, tests in a background thread)

Pages (/, /lessons/NAME, /model, /engine) are one HTML shell, static/index.html, whose scripts
read the path and draw the view: the shared pieces first, in SHARED_SCRIPTS order (common.js,
the `LI` namespace, before the rest), then every other static/*.js (the views) in name order,
each registering its views with `LI.registerView`. A new view is a new router here and a new
.js file there; a new shared piece is a new .js file added to SHARED_SCRIPTS.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from llm_internals.inference.server.guards import GuardSettings, RequestGuard
from llm_internals.web import engine_api, lessons_api, model_api
from llm_internals.web.errors import ApiError, install_error_handlers
from llm_internals.web.lesson_cache import LessonCache

STATIC = Path(__file__).parent / "static"
PAGE_VIEWS = ("model", "engine")  # /model and /engine, drawn by model.js and engine.js
# Deferred scripts run in document order: common.js defines `LI` (the namespace, LI.el, LI.api,
# the view registry), the others add to it; the views' scripts come after all of them.
SHARED_SCRIPTS = ("common.js", "heatmap.js", "tables.js", "formula.js", "markdown.js")


def script_order() -> list[str]:
    """Every static/*.js in load order: SHARED_SCRIPTS, then the views' scripts by name."""
    views = sorted(p.name for p in STATIC.glob("*.js") if p.name not in SHARED_SCRIPTS)
    return [*SHARED_SCRIPTS, *views]


def page_html() -> str:
    """static/index.html with a deferred <script> per static/*.js, in script_order()."""
    tags = "\n".join(
        f'  <script src="/static/{html.escape(name)}" defer></script>' for name in script_order()
    )
    return (STATIC / "index.html").read_text(encoding="utf-8").replace("<!-- scripts -->", tags)


def create_app(
    model_path: str | None = None, allowed_hosts: tuple[str, ...] | None = None
) -> FastAPI:
    """The explorer app; `model_path` is the checkpoint the Model and Engine views load (None:
    the trained model shipped with the package, explain/lesson_model.py). `allowed_hosts`: the
    Host header names it answers (the serve command's guard: a web page elsewhere cannot reach
    it through DNS rebinding); None: any."""
    app = FastAPI(title="llm-internals explorer", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(RequestGuard, settings=GuardSettings(allowed_hosts=allowed_hosts))
    app.state.model_path = model_path
    app.state.lessons = LessonCache()
    install_error_handlers(app)
    routers = [lessons_api.router, model_api.router, engine_api.router]
    for router in routers:
        app.include_router(router)

    # after every router, since it matches every path under /api/ and every method
    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)  # fmt: skip
    def unknown_api(path: str, request: Request) -> None:
        raise ApiError(404, f"no API route {request.method} /api/{path}",
                       hint="the routes: /api/lessons, /api/lessons/NAME, /api/model, "
                       "/api/model/inspect, /api/engine/sessions")  # fmt: skip

    def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/lessons", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/lessons/{name}", page, methods=["GET"], include_in_schema=False)
    for view in PAGE_VIEWS:
        app.add_api_route(f"/{view}", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
