"""Browser fixtures for the web explorer's tests: Playwright (the Python package) driving Debian's
chromium (installed by `make test`'s setup with apt; no browser download), one browser for the
whole session, and the explorer app served by uvicorn on a free port in a background thread.

    explorer        (url, app) of an explorer without a model, for the session
    browser_context a persistent chromium context in a temporary profile, for the session
    lesson_page     one page reused by the lesson tests; `lesson_page.errors` collects console
                    errors and uncaught page errors (cleared before each test)
    serve(app)      context manager: the app on a free port, yields its base URL
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llm_internals.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, thread: threading.Thread, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Poll until something accepts connections on the port (or the server thread died)."""
    ready = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if not thread.is_alive():
            raise RuntimeError("the explorer's server thread exited during startup")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        ready.wait(0.02)  # refused at once: give the thread a moment before the next try
    raise RuntimeError(f"the explorer did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in a daemon thread; yield its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="explorer")
    thread.start()
    try:
        wait_for_port(port, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def explorer() -> Iterator[tuple[str, object]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # lessons build in the server thread; tiny tensors
    app = create_app()
    with serve(app) as url:
        yield url, app
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def browser_context():
    """One chromium for the session, in a throw-away profile folder."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (its setup installs chromium "
                    "with apt-get) or `apt-get install -y --no-install-recommends "
                    "chromium`")  # fmt: skip
    profile = tempfile.mkdtemp(prefix="llm-internals-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1200, "height": 900},
            )  # fmt: skip
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class LessonPage:
    """A page with the console errors it has seen since `clear()`."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base, self.errors = page, base, []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, path: str, state: str = "ready") -> None:
        """Go to `path` and wait until its view finished drawing in `state` (ready or error)."""
        self.page.goto(self.base + path)
        self.page.wait_for_selector("#app[data-state=ready], #app[data-state=error]",
                                    timeout=120_000)  # fmt: skip
        shown = self.page.get_attribute("#app", "data-state")
        if shown != state:
            alert = self.page.locator('[role="alert"]')
            message = alert.first.inner_text() if alert.count() else "(no message)"
            pytest.fail(f"{path} ended {shown}, not {state}: {message}")

    def redraw(self, action) -> None:
        """Run `action` (a form change) and wait until the lesson has redrawn."""
        before = int(self.page.get_attribute("#app", "data-render") or 0)
        action()
        self.page.wait_for_function(
            "n => +document.querySelector('#app').dataset.render > n && "
            "document.querySelector('#app').dataset.state !== 'loading'",
            arg=before,
            timeout=120_000,
        )


@pytest.fixture(scope="session")
def _lesson_page(browser_context, explorer) -> LessonPage:
    return LessonPage(browser_context.new_page(), explorer[0])


@pytest.fixture
def lesson_page(_lesson_page) -> LessonPage:
    _lesson_page.errors.clear()
    return _lesson_page


@pytest.fixture(scope="session")
def serve_app():
    """`serve`, for tests that run an app of their own (the Model and Engine views on their
    test models): `with serve_app(create_app(path)) as url: ...`."""
    return serve


@pytest.fixture(scope="session")
def new_page(browser_context):
    """A factory: `new_page(base_url)` gives a LessonPage (open, redraw, errors) of its own."""
    pages: list[LessonPage] = []

    def make(base: str) -> LessonPage:
        pages.append(LessonPage(browser_context.new_page(), base))
        return pages[-1]

    yield make
    for page in pages:
        page.page.close()
