"""The Engine view in a real browser: after the same requests and steps, the block tables and
the pool on the page are the ones a test engine (same model, same settings) holds, the counters
are its statistics, and a bad setting shows the server's message; no console errors.
Screenshots go to the test's tmp_path."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.web.app import create_app
from llm_internals.web.engine_session import EngineSettings, make_engine, request_params

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
# as in test_engine_session.py: a shared prefix (r1, r2) and more blocks than the pool holds
SCRIPT = [("the cat sat", 12), ("the cat ran", 12), ("dogs bark", 16), ("birds", 16)]
EXTRA_STEPS = 4


@pytest.fixture(scope="module")
def page_at(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    save_checkpoint(tiny_decoder(0), folder)
    tiny_tokenizer().save(folder / "tokenizer.json")
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(str(folder)), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def open_path(path: str):
            page.goto(f"http://127.0.0.1:{port}{path}")
            page.wait_for_selector("main[data-state=ready]")
            return page

        yield open_path, errors
        browser.close()
    server.should_exit = True
    thread.join(timeout=5)


def redraw(page, action) -> None:
    before = page.get_attribute("main", "data-render")
    action()
    page.wait_for_function("b => document.querySelector('main').dataset.render !== b", arg=before)


def test_block_tables_and_pool_equal_a_test_engines(page_at, tmp_path):
    open_path, errors = page_at
    page = open_path("/engine")
    tokenizer = tiny_tokenizer()
    reference = make_engine(tiny_decoder(0), tokenizer, EngineSettings())
    for i, (prompt, max_tokens) in enumerate(SCRIPT):
        page.fill("#engine-prompt", prompt)
        page.fill("#engine-max-tokens", str(max_tokens))
        redraw(page, lambda: page.click("#add"))
        redraw(page, lambda: page.click("#step"))
        reference.add_request(f"r{i + 1}", tokenizer.encode(prompt), request_params(max_tokens))
        reference.step()
    for _ in range(EXTRA_STEPS):
        redraw(page, lambda: page.click("#step"))
        reference.step()
    assert reference.stats().preemptions >= 1  # the pool overflowed: a sample went back
    shown = page.locator("#block-tables .block-table").evaluate_all(
        "rows => rows.map(r => [r.dataset.seq, [...r.querySelectorAll('.block')]"
        ".map(b => +b.dataset.block)])"
    )
    expected = reference.block_tables()
    assert {seq: blocks for seq, blocks in shown} == {
        f"{request}#{index}": blocks for (request, index), blocks in expected.items()
    }
    snapshot = reference.pool_snapshot()
    pool = page.locator("#pool .pool-block").evaluate_all(
        "bs => bs.map(b => [+b.dataset.block, +b.dataset.ref, b.dataset.state, b.dataset.holders])"
    )
    assert pool == [
        [b.block_id, b.ref_count, b.state,
         " ".join(f"{s.request_id}#{s.index}" for s in snapshot.holders(b.block_id))]
        for b in snapshot.blocks
    ]  # fmt: skip
    stats = reference.stats()
    counters = dict(page.locator("#engine-status .counter").evaluate_all(
        "cs => cs.map(c => [c.dataset.counter, c.querySelector('.value').textContent])"
    ))  # fmt: skip
    assert counters["step"] == str(len(SCRIPT) + EXTRA_STEPS)
    assert counters["preemptions"] == str(stats.preemptions)
    assert counters["prefix-cache hits"].startswith(
        f"{stats.prefix_cache_hit_tokens} / {stats.prefix_cache_queried_tokens} tokens"
    )
    memory = page.locator("#memory .meta")
    per_slot = reference.cache.nbytes() // (reference.cache.num_blocks * 4)
    assert memory.get_attribute("data-used") == str(stats.kv_slots_used * per_slot)
    assert memory.get_attribute("data-allocated") == str(stats.kv_slots_allocated * per_slot)
    page.screenshot(path=tmp_path / "engine-view.png", full_page=True)
    redraw(page, lambda: page.click("#run-all"))
    assert page.locator("#requests td[data-col='2']").all_text_contents() == ["finished"] * 4
    assert errors == []


def test_bad_settings_show_the_servers_message(page_at):
    open_path, errors = page_at
    page = open_path("/engine")
    page.fill("#num-blocks", "1000")
    redraw(page, lambda: page.click("#reset"))
    assert (
        "num_blocks must be an integer in [1, 64]" in page.locator("#engine-error").text_content()
    )
    assert all("400" in e for e in errors)  # the browser logs the 400 response itself
    errors.clear()
