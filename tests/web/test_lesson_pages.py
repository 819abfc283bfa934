"""Lesson pages in a real browser (chromium through Playwright): every lesson loads with no
console error and shows what its JSON holds; each interactive lesson, after one input change,
shows the number the library computes for that input (`get_lesson` here, in the test); bad
lessons and inputs give a clear message. Screenshots go to each test's tmp_path."""

from __future__ import annotations

import pytest
import torch

from llm_internals.explain.lesson import Table
from llm_internals.explain.registry import get_lesson, lesson_inputs, list_lessons
from llm_internals.explain.render import lesson_to_dict

LESSONS = [info.name for info in list_lessons()]


def _number(text: str) -> float:
    return float(text)  # also "nan", "inf", "-inf", as the lesson JSON writes them


def test_index_lists_every_lesson_in_curriculum_order(lesson_page, tmp_path):
    lesson_page.open("/")
    shown = lesson_page.page.eval_on_selector_all(
        "li[data-lesson]", "e => e.map(x => x.dataset.lesson)"
    )
    assert shown == LESSONS
    first = lesson_page.page.locator("li[data-lesson] a.title").first
    assert first.inner_text() == list_lessons()[0].title
    badges = lesson_page.page.eval_on_selector_all(
        "li[data-lesson]", "e => e.map(x => x.querySelector('.editable')?.textContent || '')"
    )
    expected = [", ".join(i.name for i in lesson_inputs(name)) for name in LESSONS]
    assert badges == [f"inputs: {names}" if names else "" for names in expected]
    lesson_page.page.screenshot(path=tmp_path / "index.png")
    assert lesson_page.errors == []


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_page_loads_without_console_errors(lesson_page, explorer, name, tmp_path):
    lesson_page.open(f"/lessons/{name}")
    page = lesson_page.page
    data = explorer[1].state.lessons.lesson(name, {})  # what the page fetched (cached)
    assert page.inner_text("h1") == data["title"]
    steps = [step for section in data["sections"] for step in section["steps"]]
    assert page.locator("section[data-section]").count() == len(data["sections"])
    assert page.locator(".step").count() == len(steps)
    assert page.locator(".value").count() == sum(len(s["values"]) for s in steps)
    formulas = [s["formula"] for s in steps if s["formula"]]
    assert page.locator(".formula").count() == len(formulas)
    typeset = page.locator(".formula math").count()
    assert typeset == sum("\\" not in f for f in formulas)  # regexes stay code, the rest MathML
    page.wait_for_function("[...document.images].every(i => i.complete)")
    broken = page.eval_on_selector_all("figure img", "e => e.filter(i => !i.naturalWidth).length")
    assert broken == 0
    if data["inputs"]:
        assert page.locator("form.inputs input, form.inputs select").count() == len(data["inputs"])
    at = LESSONS.index(name)
    if at + 1 < len(LESSONS):  # the link to the next lesson in curriculum order
        page.wait_for_selector("nav.neighbours a[rel=next]")
        assert page.get_attribute("nav.neighbours a[rel=next]", "href") == (
            f"/lessons/{LESSONS[at + 1]}"
        )
    page.screenshot(path=tmp_path / f"{name}.png")
    assert lesson_page.errors == []


def _shown(page, value_name: str) -> list[str]:
    """The data-value strings of a value on the page (a scalar's number, a tensor's cells, a
    table's cells or a text)."""
    return page.eval_on_selector_all(
        f'.value[data-name="{value_name}"] [data-value]', "e => e.map(x => x.dataset.value)"
    )


def _expected(lesson, value_name: str):
    for section in lesson.sections:
        for step in section.steps:
            if value_name in step.values:
                return step.values[value_name]
    raise KeyError(value_name)


# (lesson, {input: value}, the value compared, how to read it from the lesson)
CHANGES = [
    ("scaling", {"d_k": "128"}, "std of all scaled scores"),
    ("softmax", {"temperature": "3"}, "softmax(logits / T)"),
    ("sampling", {"top_k": "5"}, "top-k"),
    ("bpe", {"text": " newest lowers"}, "BPE pieces"),
    ("kv-cache", {"context": "1000"}, "KV cache at the chosen context"),
    ("paged-attention", {"block_size": "8"}, "mean waste over all steps"),
    ("rope", {"position": "37"}, "q'"),
    ("flash-attention", {"block": "2"}, "after each block (flash.m, flash.l)"),
]


@pytest.mark.parametrize("name, change, value_name", CHANGES, ids=[c[0] for c in CHANGES])
def test_one_input_change_shows_what_the_library_computes(lesson_page, name, change, value_name,
                                                          tmp_path):  # fmt: skip
    lesson_page.open(f"/lessons/{name}")
    page = lesson_page.page
    before = _shown(page, value_name)

    def change_inputs():
        for field, value in change.items():
            page.fill(f'form.inputs [name="{field}"]', value)
        page.press(f'form.inputs [name="{next(iter(change))}"]', "Enter")

    lesson_page.redraw(change_inputs)
    assert page.get_attribute("#app", "data-state") == "ready"
    expected = _expected(get_lesson(name, change), value_name)
    shown = _shown(page, value_name)
    if isinstance(expected, Table):
        cells = [c for row in expected.rows for c in row]
        assert len(shown) == len(cells)
        for got, want in zip(shown, cells, strict=True):
            if isinstance(want, str):
                assert got == want
            elif isinstance(want, bool):
                assert got == str(want).lower()
            else:
                assert _number(got) == pytest.approx(want, abs=1e-6)
    elif isinstance(expected, torch.Tensor):
        assert [_number(v) for v in shown] == pytest.approx(expected.flatten().tolist(), abs=1e-6)
    elif isinstance(expected, str):
        assert shown == [expected]
    else:
        assert _number(shown[0]) == pytest.approx(expected, abs=1e-6)
    assert shown != before, "the input changed nothing on the page"
    assert change.items() <= dict(_query(page.url)).items()  # the address keeps the inputs
    page.screenshot(path=tmp_path / f"{name}-changed.png")
    assert lesson_page.errors == []


def _query(url: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    return parse_qsl(urlsplit(url).query)


def test_a_huge_sequence_length_is_a_clear_message(lesson_page, tmp_path):
    lesson_page.open("/lessons/kv-cache")
    page = lesson_page.page
    lesson_page.redraw(lambda: (page.fill('form.inputs [name="tokens"]', "100000"),
                                page.press('form.inputs [name="tokens"]', "Enter")))  # fmt: skip
    alert = page.locator('[role="alert"]')
    assert "tokens = 100000 is outside [1, 256]" in alert.inner_text()
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=tmp_path / "huge.png")
    assert all("400" in e for e in lesson_page.errors), lesson_page.errors  # the failed fetch


def test_a_bad_value_in_the_address_offers_the_defaults(lesson_page):
    lesson_page.open("/lessons/scaling?d_k=abc", state="error")
    text = lesson_page.page.locator('[role="alert"]').inner_text()
    assert "d_k must be an integer, got 'abc'" in text
    assert lesson_page.page.locator('[role="alert"] a[href="/lessons/scaling"]').count() == 1


def test_an_unknown_lesson_is_a_clear_message(lesson_page, tmp_path):
    lesson_page.open("/lessons/no-such-lesson", state="error")
    text = lesson_page.page.locator('[role="alert"]').inner_text()
    assert "unknown lesson 'no-such-lesson'" in text and "known lessons: bpe" in text
    lesson_page.page.screenshot(path=tmp_path / "unknown.png")
    assert all("404" in e for e in lesson_page.errors), lesson_page.errors


def test_heatmap_cells_hold_and_show_the_exact_values(lesson_page, explorer):
    lesson_page.open("/lessons/softmax")
    page = lesson_page.page
    cell = page.locator('.value[data-name="probabilities"] td[data-row="0"][data-col="1"]')
    data = lesson_to_dict(get_lesson("softmax"))
    values = next(v for s in data["sections"] for st in s["steps"] for v in st["values"]
                  if v["name"] == "probabilities")  # fmt: skip
    assert cell.get_attribute("data-value") == str(values["data"][1])
    assert cell.inner_text() == f"{values['data'][1]:.4f}"
    cell.hover()
    readout = page.locator('.value[data-name="probabilities"] .readout').inner_text()
    assert readout == f"probabilities[1] = {values['data'][1]}"


def test_a_table_sorts_by_the_clicked_column(lesson_page):
    lesson_page.open("/lessons/softmax")
    page = lesson_page.page
    table = '.value[data-name="probabilities by temperature"] table'
    entropy = f'{table} th:has-text("entropy (bits)")'

    def column(c: int) -> list[float]:
        return [float(v) for v in page.eval_on_selector_all(
            f'{table} tbody td[data-col="{c}"]', "e => e.map(x => x.dataset.value)")]  # fmt: skip

    original = column(4)
    page.click(entropy)
    assert page.get_attribute(entropy, "aria-sort") == "ascending"
    assert column(4) == sorted(original)
    page.click(entropy)
    assert column(4) == sorted(original, reverse=True)
    assert page.locator(f"{table} th[aria-sort]").count() == 1
