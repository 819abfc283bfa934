"""The front end's converters, run in chromium: ASCII formulas to MathML (formula.js: scripts,
roots, sums, Greek, arrows, escaping) and the small Markdown renderer (markdown.js: escaping
first), plus the page's script order, the JSON API's errors, the lesson cache and the figure
route (no browser needed for those)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from llm_internals.web.app import SHARED_SCRIPTS, STATIC, create_app
from llm_internals.web.serial import RECORDING_LOCK


@pytest.fixture(scope="module")
def js(_lesson_page):
    _lesson_page.open("/")
    return lambda expression, *args: _lesson_page.page.evaluate(expression, *args)


def mathml(js, formula: str) -> ET.Element:
    """The <mrow> inside the <math> element the converter writes (parsed as XML)."""
    root = ET.fromstring(js("f => LI.formulaToMathML(f)", formula))
    assert root.tag == "math" and len(root) == 1
    return root[0]


def shape(node: ET.Element) -> str:
    """A compact s-expression of a MathML tree: (msub (mi x) (mi i))."""
    if len(node) == 0:
        return f"({node.tag} {node.text})" if node.text else f"({node.tag})"
    return f"({node.tag} {' '.join(shape(child) for child in node)})"


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("sqrt(d_k)", "(mrow (msqrt (msub (mi d) (mi k))))"),
        ("W^T", "(mrow (msup (mi W) (mi T)))"),
        ("x_{t+1}", "(mrow (msub (mi x) (mrow (mi t) (mo +) (mn 1))))"),
        ("10000^(2i/d)", "(mrow (msup (mn 10000) (mrow (mn 2) (mi i) (mo /) (mi d))))"),
        ("sum_j", "(mrow (munder (mo ∑) (mi j)))"),
        ("sum of p", "(mrow (mi sum) (mspace) (mi of) (mspace) (mi p))"),
        ("alpha -> beta", "(mrow (mi α) (mspace) (mo →) (mspace) (mi β))"),
        (
            "a <= b != c",
            "(mrow (mi a) (mspace) (mo ≤) (mspace) (mi b) (mspace) (mo ≠) (mspace) (mi c))",
        ),
        ("block_size", "(mrow (mi block_size))"),
        ("q_max", "(mrow (msub (mi q) (mi max)))"),
        ("W1", "(mrow (msub (mi W) (mn 1)))"),
        ("2 x layers", "(mrow (mn 2) (mo ×) (mspace) (mi layers))"),
        ("q . k", "(mrow (mi q) (mo ⋅) (mspace) (mi k))"),
        ("W_k^g", "(mrow (msubsup (mi W) (mi k) (mi g)))"),
        ("p'(c)", "(mrow (mi p′) (mrow (mo () (mi c) (mo ))))"),
    ],
)
def test_formula_to_mathml(js, formula, expected):
    assert shape(mathml(js, formula)) == expected


def test_a_lesson_formula_typesets_its_parts(js):
    tree = mathml(js, "softmax(x)_i = exp(x_i) / sum_j exp(x_j)")
    # the subscript binds to the group (x), the sum takes its index below
    assert "(msub (mrow (mo () (mi x) (mo ))) (mi i))" in shape(tree)
    assert "(munder (mo ∑) (mi j))" in shape(tree)


def test_formula_text_is_escaped_and_broken_formulas_fall_back_to_code(js):
    tree = mathml(js, "a < b & c > <script>")
    assert [n.text for n in tree.iter("mo")][:3] == ["<", "&", ">"]
    assert not list(tree.iter("script"))
    fallback = js("f => LI.formula(f).innerHTML", "softmax((x)")
    assert fallback == "<code>softmax((x)</code>"
    regex = js("f => LI.formula(f).innerHTML", r" ?\p{L}+")
    assert regex.startswith("<code>")


@pytest.mark.parametrize(
    "text, html",
    [
        ("**bold** and *italic* and `co*de*`",
         "<p><strong>bold</strong> and <em>italic</em> and <code>co*de*</code></p>"),
        ("<b>not bold</b> & more", "<p>&lt;b&gt;not bold&lt;/b&gt; &amp; more</p>"),
        ("one\ntwo\n\nthree", "<p>one two</p>\n<p>three</p>"),
        ("intro:\n- a\n- b *c*", "<p>intro:</p>\n<ul><li>a</li><li>b <em>c</em></li></ul>"),
        ("1. first\n2. second", "<ol><li>first</li><li>second</li></ol>"),
        ("`f`:\n\n```python\nif a < b:\n    return **x**\n```",
         "<p><code>f</code>:</p>\n<pre><code>if a &lt; b:\n    return **x**</code></pre>"),
        ("x_i * y_j stays", "<p>x_i * y_j stays</p>"),
    ],
)  # fmt: skip
def test_markdown(js, text, html):
    assert js("t => LI.markdownToHtml(t)", text) == html


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(), raise_server_exceptions=False)


def test_api_errors_are_json_with_a_hint(client):
    unknown = client.get("/api/lessons/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown lesson 'nope'"
    assert "softmax" in unknown.json()["hint"]
    bad = client.get("/api/lessons/softmax?temperature=0")
    assert bad.status_code == 400 and "outside [0.01, 100]" in bad.json()["error"]
    extra = client.get("/api/lessons/softmax?nonsense=1")
    assert extra.status_code == 400 and extra.json()["hint"] == "its inputs: temperature"
    route = client.get("/api/nothing/here")
    assert route.status_code == 404
    assert route.json()["error"] == "no API route GET /api/nothing/here"
    assert client.post("/api/nothing").json()["error"] == "no API route POST /api/nothing"
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "no such page" in page.json()["error"]


def test_only_the_allowed_host_names_are_answered():
    guarded = TestClient(create_app(allowed_hosts=("127.0.0.1", "localhost")))
    assert guarded.get("/api/lessons", headers={"host": "localhost:8010"}).status_code == 200
    assert guarded.get("/api/lessons", headers={"host": "evil.example"}).status_code == 400


def test_lessons_are_cached_by_their_parsed_inputs(client):
    cache = client.app.state.lessons
    first = client.get("/api/lessons/softmax?temperature=2").json()
    builds = cache.builds
    again = client.get("/api/lessons/softmax?temperature=2.0").json()  # the same value parsed
    assert again == first and cache.builds == builds
    assert first["inputs"][0]["value"] == 2.0
    other = client.get("/api/lessons/softmax?temperature=4").json()
    assert cache.builds == builds + 1 and other != first
    cache.size = 1
    client.get("/api/lessons/softmax")
    assert len(cache.entries) == 1


def test_a_cached_lesson_does_not_wait_for_another_build(client):
    cache = client.app.state.lessons
    first = cache.lesson("softmax", {"temperature": "5"})
    with ThreadPoolExecutor(1) as pool, RECORDING_LOCK:  # as if another lesson were building
        again = pool.submit(cache.lesson, "softmax", {"temperature": "5"}).result(timeout=10)
    assert again is first


def test_figures_are_served_only_when_a_lesson_drew_them(client, tmp_path):
    cache = client.app.state.lessons
    png = tmp_path / "drawn.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    cache.figures[("softmax", png.name)] = png  # as if the softmax lesson had drawn it
    assert client.get(f"/api/lessons/softmax/figures/{png.name}").content == png.read_bytes()
    assert client.get("/api/lessons/qkv/figures/drawn.png").status_code == 404
    other = tmp_path / "other.png"
    other.write_bytes(b"x")
    assert client.get("/api/lessons/softmax/figures/other.png").status_code == 404
    assert client.get("/api/lessons/softmax/figures/..%2Fother.png").status_code == 404


def test_the_page_loads_every_script_once_the_namespace_first(client):
    """Deferred scripts run in document order: common.js (which defines `LI`) must come first,
    the shared pieces before the views that use them, and no static/*.js may be left out."""
    page = client.get("/").text
    served = re.findall(r'<script src="/static/([^"]+)" defer></script>', page)
    assert sorted(served) == sorted(p.name for p in STATIC.glob("*.js"))
    assert served[: len(SHARED_SCRIPTS)] == list(SHARED_SCRIPTS)
    assert served[0] == "common.js"
    for name in served:
        assert client.get(f"/static/{name}").status_code == 200
