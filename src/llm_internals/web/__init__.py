"""The web explorer (`llm-internals explore`): lesson pages, the Model view and the Engine view,
served by one FastAPI app (app.py) with its front-end assets in static/ (no CDN, works offline)."""
