"""The lesson routes of the explorer:

GET /api/lessons                        every lesson in curriculum order (name, title, summary)
GET /api/lessons/{name}?input=value     the lesson JSON (docs/explain-json.md), built with
                                        those inputs; each figure gets a `url`
GET /api/lessons/{name}/figures/{file}  a PNG that lesson drew (only those)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from llm_internals.explain.registry import lesson_inputs
from llm_internals.web.lesson_cache import LessonCache

router = APIRouter(prefix="/api/lessons")


def _cache(request: Request) -> LessonCache:
    return request.app.state.lessons


@router.get("")
def lessons_index(request: Request) -> dict[str, Any]:
    """Every lesson with the names of its inputs (the first call imports the lesson modules)."""
    return {
        "lessons": [
            {"name": i.name, "title": i.title, "summary": i.summary,
             "inputs": [x.name for x in lesson_inputs(i.name)]}
            for i in _cache(request).infos
        ]
    }  # fmt: skip


@router.get("/{name}")
def lesson(name: str, request: Request) -> dict[str, Any]:
    given = dict(request.query_params)
    data = _cache(request).lesson(name, given)
    query = f"?{urlencode(given)}" if given else ""
    sections = []
    for section in data["sections"]:
        steps = []
        for step in section["steps"]:
            figures = [
                {**f, "url": f"/api/lessons/{quote(name)}/figures/{quote(f['file'])}{query}"}
                for f in step["figures"]
            ]
            steps.append({**step, "figures": figures})
        sections.append({**section, "steps": steps})
    return {**data, "sections": sections}


@router.get("/{name}/figures/{file}")
def lesson_figure(name: str, file: str, request: Request) -> FileResponse:
    cache = _cache(request)
    cache.known(name)
    if (name, file) not in cache.figures:  # e.g. after a restart: build the lesson once
        cache.lesson(name, dict(request.query_params))
    return FileResponse(cache.figure(name, file), media_type="image/png")
