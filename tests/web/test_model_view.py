"""The Model view in a real browser (Playwright driving Debian's chromium) on an imported HF
Llama folder (GQA, RoPE): the token chips are tokenizer.encode(prompt), the heatmap's cells carry
transformers' own attention weights (output_attentions=True) and show them to 4 decimals, and the
temperature slider gives the probabilities the library's sampler computes from transformers'
logits; no console errors. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import pytest
import torch
import transformers

from llm_internals.explain import lesson_model
from llm_internals.explain.tiny_models import TINY_ALPHABET, tiny_tokenizer
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.sampling import Sampler
from llm_internals.web.app import create_app

PROMPT = "to be, or not to be"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(folder, HF model): a random tiny Llama saved with save_pretrained, 4 query heads
    sharing 2 K/V heads, with the tiny character tokenizer."""
    folder = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(TINY_ALPHABET), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        attn_implementation="eager",
    )  # fmt: skip
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(folder)
    tiny_tokenizer().save(folder / "tokenizer.json")
    return folder, hf


@pytest.fixture(scope="module")
def view(llama, serve_app, new_page):
    """The explorer on the Llama folder, and a page of its own (conftest.py's LessonPage)."""
    with serve_app(create_app(str(llama[0]))) as url:
        yield new_page(url)


@pytest.fixture
def page(view):
    view.errors.clear()
    return view


def redraw_table(page, action) -> None:
    """Run action() and wait until the next-token table has redrawn (its data-render)."""
    before = page.page.get_attribute("#next-token", "data-render")
    action()
    page.page.wait_for_function(
        "b => document.querySelector('#next-token').dataset.render !== b", arg=before
    )


def test_tokens_and_attention_heatmap_equal_transformers(page, llama, tmp_path):
    page.open(f"/model?prompt={PROMPT.replace(' ', '%20')}")
    browser = page.page
    ids = tiny_tokenizer().encode(PROMPT)
    chips = browser.locator("#tokens .chip")
    assert [int(v) for v in chips.evaluate_all("cs => cs.map(c => c.dataset.id)")] == ids
    assert chips.evaluate_all("cs => cs.map(c => c.dataset.piece)") == list(PROMPT)
    with torch.no_grad():
        attentions = llama[1](torch.tensor([ids]), output_attentions=True).attentions
    for layer, head in [(0, 0), (1, 3)]:
        page.redraw(lambda layer=layer: browser.select_option("#layer", str(layer)))
        page.redraw(lambda head=head: browser.select_option("#head", str(head)))
        cells = browser.locator("#attention td[data-value]").evaluate_all(
            "cs => cs.map(c => [+c.dataset.row, +c.dataset.col, +c.dataset.value, c.textContent])"
        )
        expected = attentions[layer][0, head]
        assert len(cells) == len(ids) ** 2
        for row, col, value, text in cells:
            assert value == pytest.approx(float(expected[row, col]), abs=1e-6)
            assert float(text) == pytest.approx(float(expected[row, col]), abs=5e-5)  # as shown
            assert text in ("0", "1") or len(text.split(".")[1]) == 4
    browser.screenshot(path=tmp_path / "model-view.png", full_page=True)
    assert page.errors == []


def test_temperature_slider_gives_the_samplers_probabilities(page, llama, tmp_path):
    page.open(f"/model?prompt={PROMPT.replace(' ', '%20')}")
    browser = page.page
    with torch.no_grad():
        logits = llama[1](torch.tensor([tiny_tokenizer().encode(PROMPT)])).logits[0, -1:]
    for temperature, top_p in [(0.3, 1.0), (1.7, 0.8)]:
        redraw_table(page, lambda t=temperature: browser.fill("#temperature", str(t)))
        if top_p < 1.0:
            redraw_table(page, lambda p=top_p: browser.fill("#top-p", str(p)))
        probs = Sampler().distribution(logits, [SamplingParams(temperature=temperature,
                                                              top_p=top_p)])[1][0]  # fmt: skip
        rows = browser.locator("#next-token tbody tr").evaluate_all(
            "rs => rs.map(r => [+r.children[1].dataset.value, +r.children[2].dataset.value])"
        )
        assert len(rows) == 5
        for token_id, prob in rows:
            assert prob == pytest.approx(float(probs[token_id]), abs=1e-6)
        assert [r[0] for r in rows] == probs.topk(5).indices.tolist()
        meta = browser.locator("#next-token .meta").text_content()
        assert f"temperature {temperature}" in meta and f"{int((probs > 0).sum())} of" in meta
    browser.screenshot(path=tmp_path / "model-view-sampling.png", full_page=True)
    assert page.errors == []


def test_a_long_prompt_shows_the_limit(page):
    page.open("/model")
    page.page.fill("#prompt", "a" * 100)
    page.redraw(lambda: page.page.click("#run"))
    assert page.page.get_attribute("#app", "data-state") == "error"
    assert "at most 64" in page.page.locator("#model-error .message").text_content()
    # the browser reports the 413 response itself as a console error; nothing else may appear
    assert page.errors and all("413" in e for e in page.errors)


def test_the_shipped_model_is_the_default(lesson_page):
    """conftest's explorer has no --model: the view shows the package's trained model."""
    lesson_page.open("/model")
    _, tokenizer = lesson_model.load_lesson_model()
    chips = lesson_page.page.locator("#tokens .chip")
    ids = [int(v) for v in chips.evaluate_all("cs => cs.map(c => c.dataset.id)")]
    assert ids == tokenizer.encode("to be, or not to be")  # model.js's default prompt
    assert "lesson_model" in lesson_page.page.locator("#model-info").text_content()
    assert lesson_page.errors == []
