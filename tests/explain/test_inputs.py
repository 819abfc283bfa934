"""Lesson inputs: parsing, limits and the errors a learner sees (CLI --set, web form)."""

import pytest

from llm_internals.errors import LLMInternalsError
from llm_internals.explain.inputs import LessonInput, parse_assignments, parse_inputs
from llm_internals.explain.registry import get_lesson, lesson_inputs

D_K = LessonInput("d_k", "key width", 64, minimum=1, maximum=4096)
TEMP = LessonInput("temperature", "temperature", 1.0, kind="float", minimum=0.01, maximum=10)
WORD = LessonInput("word", "a word", "lower", kind="str", max_length=8)
MODE = LessonInput("mode", "mode", "naive", kind="str", choices=("naive", "absorbed"))


def test_values_are_parsed_to_their_kind():
    assert parse_inputs((D_K, TEMP, WORD), {"d_k": "128", "temperature": "0.5"}, "x") == {
        "d_k": 128,
        "temperature": 0.5,
        "word": "lower",
    }
    assert MODE.parse("absorbed") == "absorbed"


@pytest.mark.parametrize(
    "inp, raw, fragment",
    [
        (D_K, "0", "outside [1, 4096]"),
        (D_K, "100000", "outside [1, 4096]"),
        (D_K, "1.5", "must be an integer"),
        (D_K, "abc", "must be an integer"),
        (TEMP, "nan", "finite"),
        (TEMP, "inf", "finite"),
        (WORD, "", "1 to 8 characters"),
        (WORD, "x" * 9, "1 to 8 characters"),
        (MODE, "fast", "not one of: naive, absorbed"),
    ],
)
def test_bad_values_name_the_input(inp, raw, fragment):
    with pytest.raises(LLMInternalsError) as err:
        inp.parse(raw)
    assert inp.name in err.value.message and fragment in err.value.message


def test_unknown_input_lists_the_known_ones():
    with pytest.raises(LLMInternalsError) as err:
        parse_inputs((D_K,), {"dk": "3"}, "scaling")
    assert "'dk'" in err.value.message and "d_k" in err.value.hint


def test_a_default_outside_its_limits_is_a_lesson_bug():
    with pytest.raises(LLMInternalsError):
        LessonInput("n", "n", 0, minimum=1)


def test_set_assignments():
    assert parse_assignments(["d_k=8", "word=a=b"]) == {"d_k": "8", "word": "a=b"}
    with pytest.raises(LLMInternalsError, match="name=value"):
        parse_assignments(["d_k"])


def test_every_lesson_builds_with_its_default_inputs_and_refuses_unknown_ones():
    declared = lesson_inputs("softmax")
    assert all(isinstance(i, LessonInput) for i in declared)
    with pytest.raises(LLMInternalsError, match="has no input 'nonsense'"):
        get_lesson("softmax", {"nonsense": "1"})
    with pytest.raises(LLMInternalsError, match="unknown lesson"):
        lesson_inputs("no-such-lesson")
