"""The bpe lesson rebuilt with another text and merge count (`explain bpe --set text=...
--set merges=...`, or the web explorer's form): its merges and pieces are HF `tokenizers`' on the
same tiny corpus with that many merges."""

from llm_internals.explain.lessons import bpe as lesson_module
from llm_internals.explain.registry import get_lesson
from llm_internals.tokenizer.byte_level import text_to_token

from .conftest import hf_merges, hf_train

TEXT = " newest lowers"
MERGES = 5


def shown(text: str) -> str:
    return text.replace(" ", "␣")


def test_another_text_and_merge_count_match_hf():
    lesson = get_lesson("bpe", {"text": TEXT, "merges": str(MERGES)})
    sections = {s.title: s.steps for s in lesson.sections}
    hf = hf_train(lesson_module.TINY_CORPUS, 256 + MERGES)
    merges = [(text_to_token(a).decode(), text_to_token(b).decode()) for a, b in hf_merges(hf)]
    training = sections["How BPE works step by step"]
    assert len(training) == MERGES == len(merges)
    for step, (left, right) in zip(training, merges, strict=True):
        assert f"= {shown(left + right)}" in step.values["new token"]
    pieces = [text_to_token(t).decode() for t in hf.encode(TEXT).tokens]
    assert sections["What is tokenization"][2].values["BPE pieces"] == " | ".join(
        shown(p) for p in pieces
    )
    applied = sections["How BPE tokenizes new text"][0].values
    assert applied["bytes"] == str(list(TEXT.encode()))
    merged = {(left + right).encode(): 256 + n for n, (left, right) in enumerate(merges)}
    ids = [merged.get(p.encode(), p.encode()[0]) for p in pieces]  # a byte's id is its value
    assert applied["final ids"] == str(ids)
