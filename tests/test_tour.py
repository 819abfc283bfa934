import pytest

from llm_internals.tour import STAGES, run_tour


@pytest.mark.slow
@pytest.mark.network
def test_tour_runs_every_built_stage_on_the_default_corpus(tmp_path, shakespeare_text, capsys):
    ctx = run_tour(workdir=tmp_path)
    out = capsys.readouterr().out
    assert ctx.text == shakespeare_text
    assert ctx.train_text + ctx.val_text == ctx.text
    for number, (title, _module) in enumerate(STAGES, start=1):
        assert f"Stage {number}/{len(STAGES)}: {title}" in out
    assert "Tour finished" in out
    assert ctx.artifacts["serving"]["identical"]  # paged engine == contiguous generate, greedy
