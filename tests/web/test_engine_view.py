"""The Engine view in a real browser: after the same requests and steps, the block tables and
the pool on the page are the ones a test engine (same model, same settings) holds, the counters
are its statistics, and a bad setting shows the server's message; no console errors.
Screenshots go to the test's tmp_path."""

from __future__ import annotations

import pytest

from llm_internals.explain.tiny_models import tiny_decoder, tiny_tokenizer
from llm_internals.models.checkpoint import save_checkpoint
from llm_internals.web.app import create_app
from llm_internals.web.engine_session import EngineSettings, make_engine, request_params

# as in test_engine_session.py: a shared prefix (r1, r2) and more blocks than the pool holds
SCRIPT = [("the cat sat", 12), ("the cat ran", 12), ("dogs bark", 16), ("birds", 16)]
EXTRA_STEPS = 4


@pytest.fixture(scope="module")
def view(tmp_path_factory, serve_app, new_page):
    """The explorer on a tiny random model, and a page of its own (conftest.py's LessonPage)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    save_checkpoint(tiny_decoder(0), folder)
    tiny_tokenizer().save(folder / "tokenizer.json")
    with serve_app(create_app(str(folder))) as url:
        yield new_page(url)


@pytest.fixture
def page(view):
    view.errors.clear()
    return view


def test_block_tables_and_pool_equal_a_test_engines(page, tmp_path):
    page.open("/engine")
    browser = page.page
    tokenizer = tiny_tokenizer()
    reference = make_engine(tiny_decoder(0), tokenizer, EngineSettings())
    for i, (prompt, max_tokens) in enumerate(SCRIPT):
        browser.fill("#engine-prompt", prompt)
        browser.fill("#engine-max-tokens", str(max_tokens))
        page.redraw(lambda: browser.click("#add"))
        page.redraw(lambda: browser.click("#step"))
        reference.add_request(f"r{i + 1}", tokenizer.encode(prompt), request_params(max_tokens))
        reference.step()
    for _ in range(EXTRA_STEPS):
        page.redraw(lambda: browser.click("#step"))
        reference.step()
    assert reference.stats().preemptions >= 1  # the pool overflowed: a sample went back
    shown = browser.locator("#block-tables .block-table").evaluate_all(
        "rows => rows.map(r => [r.dataset.seq, [...r.querySelectorAll('.block')]"
        ".map(b => +b.dataset.block)])"
    )
    expected = reference.block_tables()
    assert {seq: blocks for seq, blocks in shown} == {
        f"{request}#{index}": blocks for (request, index), blocks in expected.items()
    }
    snapshot = reference.pool_snapshot()
    pool = browser.locator("#pool .pool-block").evaluate_all(
        "bs => bs.map(b => [+b.dataset.block, +b.dataset.ref, b.dataset.state, b.dataset.holders])"
    )
    assert pool == [
        [b.block_id, b.ref_count, b.state,
         " ".join(f"{s.request_id}#{s.index}" for s in snapshot.holders(b.block_id))]
        for b in snapshot.blocks
    ]  # fmt: skip
    stats = reference.stats()
    counters = dict(browser.locator("#engine-status .counter").evaluate_all(
        "cs => cs.map(c => [c.dataset.counter, c.querySelector('.value').textContent])"
    ))  # fmt: skip
    assert counters["step"] == str(len(SCRIPT) + EXTRA_STEPS)
    assert counters["preemptions"] == str(stats.preemptions)
    assert counters["prefix-cache hits"].startswith(
        f"{stats.prefix_cache_hit_tokens} / {stats.prefix_cache_queried_tokens} tokens"
    )
    memory = browser.locator("#memory .meta")
    per_slot = reference.cache.nbytes() // (reference.cache.num_blocks * 4)
    assert memory.get_attribute("data-used") == str(stats.kv_slots_used * per_slot)
    assert memory.get_attribute("data-allocated") == str(stats.kv_slots_allocated * per_slot)
    browser.screenshot(path=tmp_path / "engine-view.png", full_page=True)
    page.redraw(lambda: browser.click("#run-all"))
    assert browser.locator("#requests td[data-col='2']").all_text_contents() == ["finished"] * 4
    assert page.errors == []


def test_bad_settings_show_the_servers_message(page):
    page.open("/engine")
    page.page.fill("#num-blocks", "1000")
    page.redraw(lambda: page.page.click("#reset"))
    message = page.page.locator("#engine-error").text_content()
    assert "num_blocks must be an integer in [1, 64]" in message
    assert page.errors and all("400" in e for e in page.errors)  # the browser logs the 400
