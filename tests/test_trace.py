import timeit

import torch

from llm_internals import trace
from llm_internals.trace import is_recording, record, recording


def test_record_without_recorder_keeps_nothing_and_costs_one_check():
    record("x", torch.ones(3))
    assert not is_recording()
    assert trace._active == []
    big = torch.randn(512, 512)
    # With no recorder the call must not touch the value: time it against a bare function call.
    t_record = min(timeit.repeat(lambda: record("big", big), number=20_000, repeat=5))
    t_noop = min(timeit.repeat(lambda: len(trace._active), number=20_000, repeat=5))
    assert t_record < 4 * t_noop + 0.01  # no copy of a 1 MB tensor (that would take ~100x longer)


def test_recording_collects_detached_copies_in_order():
    x = torch.zeros(2, requires_grad=True)
    with recording() as rec:
        y = x * 2
        record("y", y, note="doubled")
        record("step", 1)
        record("step", 2)
    y.data.fill_(7.0)  # later in-place change must not alter the record
    assert rec.names() == ["y", "step"]
    assert torch.equal(rec.get("y"), torch.zeros(2))
    assert not rec.get("y").requires_grad
    assert rec.all("step") == [1, 2]
    assert rec.get("step") == 2
    assert rec.records[0].note == "doubled"


def test_nested_recordings_both_see_inner_records_and_unwind():
    with recording() as outer:
        record("a", 1)
        with recording() as inner:
            record("b", 2)
        record("c", 3)
    assert outer.names() == ["a", "b", "c"]
    assert inner.names() == ["b"]
    assert not is_recording()


def test_recording_unwinds_on_exception_and_get_names_missing_key():
    try:
        with recording() as rec:
            record("a", 1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not is_recording()
    try:
        rec.get("zzz")
    except KeyError as e:
        assert "zzz" in str(e) and "a" in str(e)
    else:
        raise AssertionError("missing name must raise KeyError")
